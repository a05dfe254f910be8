"""Pre-trains the small ViT that configs/vit_transfer.py transfers: Fashion-MNIST from scratch.

    PYTHONPATH=. python scripts/pretrain_small_vit.py --epochs 30 --seed 0

A ViT with big_vision's layout (width 192, depth 6, 3 heads, MLP 768, 4 x 4
patches: 49 tokens + cls at 28 x 28 px) learns the 60,000 official training
images of Fashion-MNIST (Debian's dataset-fashion-mnist, read by
gga_jax.data) and is tested on the 10,000 official test images after every
epoch. Recipe: AdamW (weight decay on kernels only), linear warm-up then
cosine decay, gradient clipping at norm 1, label smoothing 0.1, batch 256,
random 28 px crops of the image padded by 2 px and random horizontal flips.
The same code runs on CPU (slowly) and on a GPU; it prints the device.

It writes --out (default gga_jax/assets/vit_fmnist_s4.npz): the backbone in
big_vision's flat "a/b/c" .npz names, without the 10-class head, which a
transfer run replaces; and next to it a .json with the command, seed, epochs,
steps, test accuracy and model settings. `--max_steps 20` makes a smoke run.
"""

import argparse
import json
import pathlib
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gga_jax
from gga_jax import checkpoints
from gga_jax import data as data_lib
from gga_jax import train as train_lib
from gga_jax.models import vit

DEFAULT_OUT = pathlib.Path(gga_jax.__file__).parent / "assets" / "vit_fmnist_s4.npz"
IMAGE_SIZE = 28
CROP_PAD = 2


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max_steps", type=int, default=0, help="Stop after this many steps (0: all).")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="Peak AdamW learning rate.")
    p.add_argument("--weight_decay", type=float, default=0.05)
    p.add_argument("--warmup_epochs", type=float, default=2.0)
    p.add_argument("--label_smoothing", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--num_heads", type=int, default=3)
    p.add_argument("--mlp_dim", type=int, default=768)
    p.add_argument("--patch_size", type=int, default=4)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="The .npz to write (and its .json).")
    return p.parse_args()


def augment(rng, images):
    """Random IMAGE_SIZE crops of the images padded by CROP_PAD px of background, random flips.

    images: (B, H, W, C) in [-1, 1]; the background (black) is -1.
    """
    b, h, w, c = images.shape
    padded = jnp.pad(
        images, ((0, 0), (CROP_PAD, CROP_PAD), (CROP_PAD, CROP_PAD), (0, 0)), constant_values=-1.0
    )
    crop_rng, flip_rng = jax.random.split(rng)
    corners = jax.random.randint(crop_rng, (b, 2), 0, 2 * CROP_PAD + 1)
    crop = lambda image, yx: jax.lax.dynamic_slice(image, (yx[0], yx[1], 0), (h, w, c))  # noqa: E731
    images = jax.vmap(crop)(padded, corners)
    flip = jax.random.bernoulli(flip_rng, 0.5, (b, 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1], images)


def make_optimizer(args, total_steps: int, steps_per_epoch: int) -> optax.GradientTransformation:
    warmup = min(round(args.warmup_epochs * steps_per_epoch), total_steps - 1)
    lr = optax.warmup_cosine_decay_schedule(0.0, args.lr, warmup, total_steps)
    # Decay the kernels only: no biases, norms, cls token or position embeddings.
    decay = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: path[-1].key == "kernel", params
    )
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(lr, weight_decay=args.weight_decay, mask=decay),
    )


def make_train_step(model, opt, label_smoothing: float):
    def loss_fn(params, images, labels):
        logits = model.apply({"params": params}, images)
        return jnp.mean(train_lib.cross_entropy(logits, labels, label_smoothing))

    def step(params, opt_state, batch, rng):
        images = augment(rng, batch["inputs"])
        loss, grads = jax.value_and_grad(loss_fn)(params, images, batch["labels"])
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def main() -> None:
    args = parse_args()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
    splits = data_lib.load(
        {
            "source": "offline",
            "name": "fashion_mnist",
            "image_size": IMAGE_SIZE,
            "train_size": 60_000,
            "test_size": 10_000,
            "seed": args.seed,
        }
    )
    train, test = splits["train"], splits["test"]
    settings = dict(
        width=args.width,
        depth=args.depth,
        num_heads=args.num_heads,
        mlp_dim=args.mlp_dim,
        patch_size=args.patch_size,
        image_size=IMAGE_SIZE,
        pool_type="tok",
    )
    model = vit.Model(
        splits["num_classes"], **{k: v for k, v in settings.items() if k != "image_size"}
    )
    rng = jax.random.PRNGKey(args.seed)
    params = jax.jit(model.init)(rng, train.inputs[:1])["params"]
    print(f"parameters: {train_lib.count_params(train_lib.flatten(params)):,}")

    steps_per_epoch = data_lib.steps_per_epoch(train, args.batch_size)
    total = args.epochs * steps_per_epoch
    total = min(total, args.max_steps) if args.max_steps else total
    opt = make_optimizer(args, total, steps_per_epoch)
    opt_state = opt.init(params)
    step_fn = make_train_step(model, opt, args.label_smoothing)
    eval_step = train_lib.make_eval_step(model)
    batches = data_lib.train_batches(train, args.batch_size, args.seed)

    start, losses, result = time.perf_counter(), [], {}
    for step in range(1, total + 1):
        batch = next(batches)
        params, opt_state, loss = step_fn(params, opt_state, batch, jax.random.fold_in(rng, step))
        losses.append(loss)
        if step % steps_per_epoch == 0 or step == total:
            result = train_lib.evaluate(eval_step, params, data_lib.eval_batches(test, 1000))
            print(
                f"epoch {step / steps_per_epoch:5.2f}  step {step:6d}  "
                f"train loss {float(np.mean(jax.device_get(losses))):.4f}  "
                f"test accuracy {100 * result['accuracy']:.2f}%  "
                f"{time.perf_counter() - start:.0f} s"
            )
            losses = []

    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoints.save_npz(str(out), {k: v for k, v in params.items() if k != "head"})
    record = {
        "command": shlex.join(["python", *sys.argv]),
        "seed": args.seed,
        "epochs": total / steps_per_epoch,
        "steps": total,
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "dataset": "fashion_mnist: 60000 train, 10000 test (official splits)",
        "model": settings,
        "recipe": {
            k: getattr(args, k)
            for k in ("batch_size", "lr", "weight_decay", "warmup_epochs", "label_smoothing")
        },
        "device": jax.devices()[0].device_kind,
        "wall_time_s": time.perf_counter() - start,
    }
    with open(out.with_suffix(".json"), "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()

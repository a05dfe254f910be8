"""All-edge scoring of ViT-B/16 on an accelerator: time, where it goes, and exactness.

    PYTHONPATH=. python benchmarks/score_gpu.py --batch 512 --micro_batch 128

Scores all n^2 = 625 edges of a ViT-B/16 (random weights, random head) on a
batch of random 224 px images, end to end including srank, and splits the time
into the forward/backward, the n^2 products x_i^T g_j and the batched SVD. Then
checks every srank against a float64 NumPy SVD of the same G_ij, and shows how
many sranks change if the products run at a lower matmul precision (TF32/bf16),
which is why the scorer pins "highest". Absolute times mean something only on
a GPU/TPU; on CPU use benchmarks/score_edges.py.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from gga_jax import scoring
from gga_jax.models import vit


def timed(fn, *args, repeats=3):
    """(median seconds, result) after one warm-up call."""
    out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def numpy_srank(s, eta=0.01):
    cum = np.cumsum(s, axis=-1)
    k = np.sum(cum < (1 - eta) * cum[..., -1:], axis=-1) + 1
    return np.where(cum[..., -1] > 0, k, 0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="B/16")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--micro_batch", type=int, default=128)
    parser.add_argument("--reference_edges", type=int, default=625, help="edges checked in float64")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}")

    model = vit.Model(1000, variant=args.variant)
    rng = jax.random.PRNGKey(0)
    images = jax.random.normal(rng, (args.batch, 224, 224, 3))
    labels = jax.random.randint(rng, (args.batch,), 0, 1000)
    params = jax.jit(model.init)(rng, images[:1])["params"]
    params["head"]["kernel"] = 0.03 * jax.random.normal(rng, params["head"]["kernel"].shape)

    end_to_end = jax.jit(
        lambda p, x, y: scoring.score_edges(model, p, x, y, micro_batch=args.micro_batch)
    )
    seconds, scores = timed(end_to_end, params, images, labels)
    print(f"score_edges, {scores.size} edges on {args.batch} examples: {seconds:.3f} s end to end")

    mb = args.micro_batch
    with jax.default_matmul_precision("highest"):
        nodes = jax.jit(
            lambda p, x, y: scoring.node_values_and_cotangents(model, p, x, y, scale=1 / args.batch)
        )
        t_nodes, (xs, gs) = timed(nodes, params, images[:mb], labels[:mb])
        products = jax.jit(lambda a, b: scoring._pair_gradients(a, b, None))
        t_products, g = timed(products, xs, gs)
    t_svd, _ = timed(jax.jit(lambda m: scoring.srank(m.reshape(-1, *m.shape[-2:]))), g)
    micro = args.batch // mb
    print(
        f"  forward+backward {micro} x {t_nodes:.3f} s, products {micro} x {t_products:.3f} s, "
        f"srank (batched SVD of {scores.size}) {t_svd:.3f} s"
    )
    flops = scoring.scoring_flops(args.batch, xs.shape[1] // mb, xs.shape[-1], scores.size)
    print(
        f"  products: {flops['total'] / 1e12:.1f} TFLOP -> "
        f"{flops['total'] / (micro * t_products) / 1e12:.1f} TFLOP/s"
    )

    full = jax.jit(lambda p, x, y: scoring.edge_gradients(model, p, x, y, micro_batch=mb))(
        params, images, labels
    )
    g64 = np.asarray(full, np.float64).reshape(-1, *full.shape[-2:])[: args.reference_edges]
    s64 = np.linalg.svd(g64, compute_uv=False)
    want = numpy_srank(s64)
    got = np.asarray(scores).reshape(-1)[: args.reference_edges]
    print(
        f"srank vs float64 NumPy on {len(want)} edges: {np.sum(got != want)} differ, "
        f"max |diff| {np.max(np.abs(got - want))}"
    )
    close = np.abs(np.cumsum(s64, -1) / s64.sum(-1, keepdims=True) - 0.99).min(-1)
    print(f"  edges within 1e-4 of the threshold: {np.sum(close < 1e-4)}")
    for name in ("default", "high", "bfloat16"):
        with jax.default_matmul_precision(name):
            low = jax.jit(lambda a, b: jnp.einsum("imd,jme->ijde", a, b))(xs, gs)
        ref = jax.jit(lambda a, b: scoring._pair_gradients(a, b, None))(xs, gs)
        r_low = np.asarray(scoring.srank(low.reshape(-1, *low.shape[-2:])))
        r_ref = np.asarray(scoring.srank(ref.reshape(-1, *ref.shape[-2:])))
        print(
            f"  products at precision {name!r}: "
            f"{np.sum(r_low != r_ref)} of {r_ref.size} sranks change"
        )


if __name__ == "__main__":
    main()

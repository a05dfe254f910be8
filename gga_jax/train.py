"""Training and evaluation: regex-frozen parameters, docs/spec.md §5 optimisers, the run loop.

Parameters are flattened to "a/b/c" names; a regex picks the trainable ones
(`^(adapters|head)/` for adapters, `^head/` for a linear probe, `.*` for full
fine-tuning). Only trainable parameters get gradients and optimizer state, and
only they are checkpointed: the frozen backbone is never duplicated.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.traverse_util as traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gga_jax import checkpoints, models, sharding

TRAINABLE = {
    "adapters": r"^(adapters|head)/",
    "linear_probe": r"^head/",
    "full_finetune": r".*",
}
# The node caches a batch may carry, each a keyword of the models' __call__.
CACHED = ("pass1", "prefix")
# The arms of a run that train without adapters.
MODES = ("linear_probe", "full_finetune")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "polynomial", "constant")


def flatten(params: Mapping) -> dict[str, Any]:
    """{"a": {"b": x}} -> {"a/b": x}."""
    return traverse_util.flatten_dict(dict(params), sep="/")


def unflatten(flat: Mapping[str, Any]) -> dict:
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def partition(params: Mapping, pattern: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Splits params into (trainable, frozen) flat dicts by a regex on the names."""
    regex = re.compile(pattern)
    flat = flatten(params)
    trainable = {k: v for k, v in flat.items() if regex.search(k)}
    if not trainable:
        raise ValueError(
            f"No parameter matches the trainable pattern {pattern!r}; names: {sorted(flat)}."
        )
    return trainable, {k: v for k, v in flat.items() if k not in trainable}


def count_params(flat: Mapping[str, Any]) -> int:
    return int(sum(np.prod(np.shape(v)) for v in flat.values()))


def schedule(config, total_steps: int) -> optax.Schedule:
    """docs/spec.md §5 learning-rate schedules: cosine with warm-up, or polynomial with warm-up."""
    warmup = config.warmup_steps
    if warmup is None or warmup < 0:
        warmup = round(config.warmup_fraction * total_steps)
    warmup = min(warmup, total_steps)
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, config.lr, warmup, max(total_steps, warmup + 1)
        )
    if config.schedule == "polynomial":
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, config.lr, max(warmup, 1)),
                optax.polynomial_schedule(config.lr, 0.0, 1.0, max(total_steps - warmup, 1)),
            ],
            [warmup],
        )
    if config.schedule == "constant":
        return optax.constant_schedule(config.lr)
    raise ValueError(f"Unknown schedule {config.schedule!r}; valid: {SCHEDULES}.")


def optimizer(config, total_steps: int) -> optax.GradientTransformation:
    """SGD momentum 0.9 (vision) or AdamW (text), docs/spec.md §5, with optional grad clipping."""
    lr = schedule(config, total_steps)
    if config.optimizer == "sgd":
        opt = optax.sgd(lr, momentum=config.momentum)
        if config.weight_decay:
            opt = optax.chain(optax.add_decayed_weights(config.weight_decay), opt)
    elif config.optimizer == "adamw":
        opt = optax.adamw(lr, weight_decay=config.weight_decay)
    else:
        raise ValueError(f"Unknown optimizer {config.optimizer!r}; valid: {OPTIMIZERS}.")
    if config.grad_clip_norm:
        opt = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)
    return opt


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy with integer labels and optional smoothing."""
    num_classes = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def make_train_step(
    model,
    opt: optax.GradientTransformation,
    label_smoothing: float = 0.0,
    shardings: Mapping[str, Any] | None = None,
):
    """A jitted step (trainable, frozen, opt_state, batch) -> (trainable, opt_state, metrics).

    A batch is {"inputs", "labels"} and optionally "pass1" and "prefix" ({k: (B, T,
    d)} plain node values, see `plain_values`): the model then takes them instead
    of running its first pass / its frozen prefix (graph.propagate). The
    trainable parameters and optimizer state are donated: XLA updates them in
    place. `shardings` ({"trainable", "frozen", "opt_state", "batch", "replicated"},
    see `state_shardings`) pins every input and output to its place on the mesh;
    without it the step follows its inputs' placement.
    """

    def loss_fn(trainable, frozen, batch):
        variables = {"params": unflatten({**frozen, **trainable})}
        logits = model.apply(variables, batch["inputs"], **_cached(batch))
        loss = jnp.mean(cross_entropy(logits, batch["labels"], label_smoothing))
        return loss, jnp.mean(jnp.argmax(logits, -1) == batch["labels"])

    def step(trainable, frozen, opt_state, batch):
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, frozen, batch)
        updates, opt_state = opt.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        return (
            trainable,
            opt_state,
            {"loss": loss, "accuracy": acc, "grad_norm": optax.tree.norm(grads)},
        )

    if shardings is None:
        return jax.jit(step, donate_argnums=(0, 2))
    s = shardings
    return jax.jit(
        step,
        in_shardings=(s["trainable"], s["frozen"], s["opt_state"], s["batch"]),
        out_shardings=(s["trainable"], s["opt_state"], s["replicated"]),
        donate_argnums=(0, 2),
    )


def state_shardings(partitioner, trainable, frozen, opt_state) -> dict[str, Any]:
    """Shardings of a train state by the partitioner's regex rules (see make_train_step)."""
    trainable_sh = partitioner.params(trainable)
    return {
        "trainable": trainable_sh,
        "frozen": partitioner.params(frozen),
        "opt_state": sharding.state_shardings(opt_state, trainable, trainable_sh, partitioner.mesh),
        "batch": partitioner.batch,
        "replicated": partitioner.replicated,
    }


def step_memory(model, params, pattern: str, config, partitioner, inputs) -> dict[str, int]:
    """Per-device bytes of one train step on the partitioner's mesh, allocating nothing.

    Args:
      params: the parameter tree as jax.ShapeDtypeStructs (jax.eval_shape of init).
      pattern: the trainable regex; config: the train config (optimizer, batch size).
      inputs: one example's input pytree of ShapeDtypeStructs (leading axis 1).
    Returns:
      {"trainable", "frozen", "opt_state", "batch"}: the bytes each device holds of
      them under the partition rules; "temp": the compiled step's scratch memory
      (activations kept for the backward pass and collectives' buffers), from
      XLA's memory analysis of this backend.
    """
    trainable, frozen = partition(params, pattern)
    opt = optimizer(config, config.steps)
    opt_state = jax.eval_shape(opt.init, trainable)
    sh = state_shardings(partitioner, trainable, frozen, opt_state)
    rows = lambda x: jax.ShapeDtypeStruct((config.batch_size, *x.shape[1:]), x.dtype)  # noqa: E731
    batch = {
        "inputs": jax.tree_util.tree_map(rows, inputs),
        "labels": jax.ShapeDtypeStruct((config.batch_size,), jnp.int32),
    }
    step = make_train_step(model, opt, config.label_smoothing, sh)
    analysis = step.lower(trainable, frozen, opt_state, batch).compile().memory_analysis()
    sizes = {
        name: sharding.bytes_per_device(tree, sh[key])
        for name, tree, key in (
            ("trainable", trainable, "trainable"),
            ("frozen", frozen, "frozen"),
            ("opt_state", opt_state, "opt_state"),
        )
    }
    batch_sh = jax.tree_util.tree_map(lambda _: sh["batch"], batch)
    sizes["batch"] = sharding.bytes_per_device(batch, batch_sh)
    sizes["temp"] = int(getattr(analysis, "temp_size_in_bytes", 0) or 0)
    return sizes


def fit_head(
    model,
    params: Mapping,
    inputs,
    labels,
    *,
    steps: int = 50,
    lr: float = 0.01,
    batch_size: int = 64,
    momentum: float = 0.9,
    seed: int = 0,
) -> dict:
    """docs/spec.md §3 step 1 in memory: trains the head alone, so that dL/dx_j is not zero.

    A zero-initialised head gives zero cotangents at every node, hence zero edge
    gradients and all-equal scores. The backbone is frozen and the head is the
    linear map pre_logits -> logits, so the pooled features of the N examples
    are computed once (a forward in batches of `batch_size`) and the head takes
    `steps` SGD-momentum steps on them in one jitted lax.scan, each on
    `batch_size` examples drawn with replacement from jax.random.key(seed).
    Returns params with the trained head. `fit` is the resumable, checkpointed
    version that main uses.
    """
    from gga_jax import validation

    for name, value, want in (("steps", steps, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < want:
            raise validation.ConfigError(f"fit_head: {name} = {value!r}: must be an integer >= 1.")
    if validation.CHECKS["train.lr"](lr) is not None:
        raise validation.ConfigError(f"fit_head: lr = {lr!r}: must be a positive real number.")
    labels = np.asarray(labels)
    models.check_batch(model, inputs, labels, "fit_head", values=True)
    features = pooled_features(model, params, inputs, batch_size)
    labels = jnp.asarray(labels, jnp.int32)
    opt = optax.sgd(lr, momentum=momentum)

    def loss_fn(head, x, y):
        logits = x @ head["kernel"] + head["bias"]
        return jnp.mean(cross_entropy(logits, y))

    def step(carry, key):
        head, state = carry
        rows = jax.random.randint(key, (batch_size,), 0, len(labels))
        grads = jax.grad(loss_fn)(head, features[rows], labels[rows])
        updates, state = opt.update(grads, state, head)
        return (optax.apply_updates(head, updates), state), None

    @jax.jit
    def train_head(head):
        keys = jax.random.split(jax.random.key(seed), steps)
        return jax.lax.scan(step, (head, opt.init(head)), keys)[0][0]

    return {**params, "head": train_head(dict(params["head"]))}


def pooled_features(model, params, inputs, batch_size: int) -> jax.Array:
    """(N, d) pre_logits of `inputs` (N examples), in jitted batches of one shape."""

    @jax.jit
    def pooled(x):
        return model.apply({"params": params}, x, return_nodes=True)[1]["pre_logits"]

    num = len(jax.tree_util.tree_leaves(inputs)[0])
    parts = []
    for start in range(0, num, batch_size):
        rows = np.minimum(np.arange(start, start + batch_size), num - 1)  # one compiled shape
        parts.append(pooled(jax.tree_util.tree_map(lambda x, r=rows: x[r], inputs))[: num - start])
    return jnp.concatenate(parts)


def _cached(batch) -> dict[str, Any]:
    """The model keywords a batch carries cached node values for ("pass1", "prefix")."""
    return {k: batch[k] for k in CACHED if k in batch}


def make_eval_step(model, partitioner=None):
    """A jitted step returning summed (correct, loss, count) over the real rows of a batch.

    With a partitioner the parameters keep their placement and the batch is split
    over its batch axes. Like the train step, it takes cached node values.
    """

    def step(params, batch):
        logits = model.apply({"params": params}, batch["inputs"], **_cached(batch))
        mask = batch["mask"].astype(jnp.float32)
        correct = jnp.sum((jnp.argmax(logits, -1) == batch["labels"]) * mask)
        loss = jnp.sum(cross_entropy(logits, batch["labels"]) * mask)
        return jnp.stack([correct, loss, jnp.sum(mask)])

    if partitioner is None:
        return jax.jit(step)
    return jax.jit(step, out_shardings=partitioner.replicated)


def evaluate(eval_step, params, batches, partitioner=None, cache=None) -> dict[str, float]:
    """Accuracy and mean loss over an iterator of masked batches (split over the mesh).

    cache: cached node values of the evaluated split, as for `fit`.
    """
    total = np.zeros(3)
    feed = _feeder(partitioner, cache)
    for batch in batches:
        total += np.asarray(eval_step(params, feed(batch)))
    if total[2] == 0:
        raise ValueError("The evaluation split is empty.")
    return {
        "accuracy": float(total[0] / total[2]),
        "loss": float(total[1] / total[2]),
        "examples": int(total[2]),
    }


class MetricWriter:
    """Per-step metrics as JSON lines and TensorBoard event files in `workdir`."""

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter

        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        for name, value in metrics.items():
            self.tb.add_scalar(name, value, step)
        self.tb.flush()

    def read(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            records = [json.loads(line) for line in f]
        # A resumed run rewrites the steps after its last checkpoint: keep the latest.
        return sorted({r["step"]: r for r in records}.values(), key=lambda r: r["step"])

    def close(self) -> None:
        self.tb.close()


def fit(
    model,
    params: Mapping,
    trainable_pattern: str,
    batches: Callable[[int], Iterator[dict]],
    config,
    workdir: str,
    *,
    label: str = "",
    partitioner: sharding.Partitioner | None = None,
    cache: Mapping[str, Mapping[int, np.ndarray]] | None = None,
) -> tuple[dict, dict[str, Any]]:
    """Trains the parameters that match `trainable_pattern` for config.steps steps.

    Resumes from the latest checkpoint in `workdir` (same trainable names and
    shapes required), saves every config.checkpoint_every steps and at the end.
    `batches(start_step)` yields the training batches from that step on: this
    process's rows (sharding.host_rows) of each global batch of config.batch_size,
    the whole batch on one host. With a partitioner, parameters, optimizer state
    and batches are placed on its mesh by its rules, the frozen backbone included.
    `cache` ({"pass1": {i: (N, T, d)}, "prefix": {k: (N, T, d)}} from `plain_values`,
    rows indexed by the batches' "index") feeds recurrent edges their first-pass
    values and the model its frozen prefix nodes instead of recomputing them.
    Returns the final full parameter tree and a summary (final loss, steps/s).
    """
    from tqdm import tqdm

    from gga_jax import validation  # validation reads this module's tables

    validation.check_train_config(config)
    trainable, frozen = partition(params, trainable_pattern)
    opt = optimizer(config, config.steps)
    state, frozen, shardings = _initial_state(opt, trainable, frozen, partitioner, config)
    manager = checkpoints.Manager(os.path.join(workdir, "checkpoints"), config.checkpoint_every)
    start, restored = manager.restore_latest(state)
    trainable, opt_state = (restored or state)["trainable"], (restored or state)["opt_state"]
    step_fn = make_train_step(model, opt, config.label_smoothing, shardings)
    place = _feeder(partitioner, cache, model, partitioner and config.batch_size)
    writer = MetricWriter(workdir) if jax.process_index() == 0 else None
    metrics, begin, done = {}, time.perf_counter(), 0
    tail = final_loss_steps(config.steps)
    bar = tqdm(
        total=config.steps,
        initial=start,
        desc=label or "train",
        dynamic_ncols=True,
        mininterval=2,
        disable=writer is None,
    )
    for step, batch in zip(range(start + 1, config.steps + 1), batches(start)):
        trainable, opt_state, metrics = step_fn(trainable, frozen, opt_state, place(batch))
        done += 1
        if writer and (step % config.log_every == 0 or step > config.steps - tail):
            values = {k: float(v) for k, v in metrics.items()}
            rate = done / (time.perf_counter() - begin)
            writer.write(step, {**values, "steps_per_s": rate})
            bar.set_postfix(loss=f"{values['loss']:.4f}", steps_s=f"{rate:.2f}")
        bar.update(1)
        manager.save(
            step, {"trainable": trainable, "opt_state": opt_state}, force=step == config.steps
        )
    bar.close()
    manager.close()
    seconds = time.perf_counter() - begin
    history = writer.read() if writer else []
    if writer:
        writer.close()
    summary = {
        "final_train_loss": final_loss(history, config.steps),
        "last_batch_loss": history[-1]["loss"] if history else None,
        "steps_per_s": done / seconds if done else None,
        "resumed_from_step": start,
        "trainable_params": count_params(trainable),
    }
    return unflatten({**frozen, **trainable}), summary


def final_loss_steps(steps: int) -> int:
    """How many of the last steps the reported train loss averages: 10%, at least 1."""
    return max(1, steps // 10)


def final_loss(history: list[dict], steps: int) -> float | None:
    """The mean training loss of the last final_loss_steps(steps) steps.

    One batch's loss is noisy (it is what the batch happened to hold); the mean
    over the last 10% of the steps is what a sweep can compare and correlate.
    fit logs every one of those steps, so a resumed run has them all too.
    """
    last = [r["loss"] for r in history if r["step"] > steps - final_loss_steps(steps)]
    return float(np.mean(last)) if last else None


def _feeder(partitioner, cache=None, model=None, global_size=None):
    """batch -> what the step takes: "index" swapped for cached node rows, placed on the mesh.

    global_size: the batches hold this process's rows of global batches of this
    size (Partitioner.to_global); None: they are the global batches.

    With a model, each host batch's labels and inputs are first checked by
    models.check_batch (integer checks on the host, cheap beside a step).
    """
    cache = {k: v for k, v in (cache or {}).items() if v}
    unknown = sorted(set(cache) - set(CACHED))
    if unknown:
        raise ValueError(f"Unknown node caches {unknown}; valid: {list(CACHED)}.")

    def feed(batch):
        if model is not None:
            models.check_batch(model, batch["inputs"], batch["labels"], "a training batch")
        batch = dict(batch)
        index = batch.pop("index", None)
        if cache and index is None:
            raise ValueError("A node cache needs batches with an 'index' (data.Split.take).")
        for name, values in cache.items():
            batch[name] = {k: v[index] for k, v in values.items()}
        return batch if partitioner is None else partitioner.to_global(batch, global_size)

    return feed


def plain_values(model, params, inputs, batch_size: int, nodes) -> dict[int, np.ndarray]:
    """Plain node values x_k (N, T, d) of `inputs` at `nodes`, on the host.

    The backbone without adapters: the recurrent sources' pass-1 values z_i and
    the frozen nodes before an edge list's first target (graph.prefix_nodes) are
    both functions of the example alone, so computed once here they serve every
    epoch, every evaluation and, in a sweep, every run on the same data. Only
    valid while the inputs of an example never change (no random augmentation).
    """
    fn = jax.jit(plain_fn(model, nodes))
    num = len(jax.tree_util.tree_leaves(inputs)[0])
    parts = []
    for start in range(0, num, batch_size):
        rows = np.minimum(np.arange(start, start + batch_size), num - 1)  # one compiled shape
        out = fn(params, jax.tree_util.tree_map(lambda x, r=rows: x[r], inputs))
        parts.append({k: np.asarray(v)[: num - start] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def plain_fn(model, nodes) -> Callable:
    """(params, inputs) -> {k: x_k} at `nodes`: `model` with no adapters (params' ignored)."""
    plain = model.clone(edges=(), linear_edges=())

    def values(params, inputs):
        backbone = {k: v for k, v in params.items() if k != "adapters"}
        _, out = plain.apply({"params": backbone}, inputs, return_nodes=True)
        return {int(k): out["nodes"][k] for k in nodes}

    return values


def _initial_state(opt, trainable, frozen, partitioner, config):
    """({"trainable", "opt_state"}, frozen, step shardings), placed on the mesh if any.

    The trainable arrays are copies: the step donates them, the caller's stay valid.
    """
    if partitioner is None:
        trainable = jax.tree_util.tree_map(jnp.copy, trainable)
        return {"trainable": trainable, "opt_state": opt.init(trainable)}, frozen, None
    partitioner.check_batch_size(config.batch_size, "train.batch_size")
    abstract = jax.eval_shape(opt.init, trainable)
    shardings = state_shardings(partitioner, trainable, frozen, abstract)
    trainable = jax.tree_util.tree_map(
        lambda x, s: jax.device_put(jnp.array(x, copy=True), s), trainable, shardings["trainable"]
    )
    opt_state = jax.jit(opt.init, out_shardings=shardings["opt_state"])(trainable)
    frozen = sharding.put(frozen, shardings["frozen"])
    return {"trainable": trainable, "opt_state": opt_state}, frozen, shardings

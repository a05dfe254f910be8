"""Scaling over devices of the sharded train step and scorer, and the cost of recurrent edges.

    PYTHONPATH=. python benchmarks/scale.py --out /tmp/scale_cpu.json
    PYTHONPATH=. python benchmarks/scale.py --gpu --out /tmp/scale_gpu.json
    PYTHONPATH=. python benchmarks/scale.py --gpu --small

CPU mode (the default) runs one subprocess per device count in --devices, each
with that many forced host devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N), and measures on a small
random ViT (32 px, 4 x 4 patches): adapter-training steps/s of
`train.make_train_step` pinned to `train.state_shardings` of a data-parallel
mesh; `scoring.score_edges` of all n^2 edges on that mesh (and on one device
without a mesh); scorer edges/s for several `chunk` sizes on 1 and 8 devices;
and the step time and XLA FLOPs of a placement with recurrent edges against
all-parallel (PA) adapters. Forced host devices share the machine's cores, so
these figures show that the sharded code runs and how its overheads grow with
the device count, not speed-ups.

GPU mode (--gpu) measures on one accelerator: ViT-B/16 (random weights, 224 px)
scoring all 625 edges on 512 examples end to end including srank ("auto"
method), with the time split into forward + backward, the n^2 products and the
srank; then adapter-training steps/s (batch 128) for PA and for a 24-edge GGA
placement over candidates with recurrent edges. If GGA picked no edge out of
node 24, a worst case is timed as well: GGA's placement with its last picks
replaced by (24, 0), (23, 1) and (22, 2). Then images/s of PA, PA with
model.remat "block", and full fine-tuning, timed together. --small shrinks it (ViT-Ti/16 at
64 px, 32 examples, batch 16) so the same code runs on a CPU in a minute or two.

Both modes print Markdown tables and, with --out, write every figure to JSON.
A placement with recurrent edges is timed twice: recomputing pass 1 every step,
and with its pass-1 values given (train.plain_values), as main's pass-1 cache
feeds them after the first epoch. Measured (CPU mode, jax 0.10.2, 348 s;
tables in docs/scaling.md): the same sranks on 1, 2, 4 and 8 devices; GGA's
placement holds (2L, 0), the worst case, and costs 1.52x the XLA FLOPs of PA
recomputing pass 1 (a frozen backbone's PA step is about 2.1 plain forwards,
pass 1 adds one), 1.065x with the cache.
"""

import os

# Batched SVD on CPU is much slower when OpenBLAS spawns its own threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import datetime
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from gga_jax import defaults, graph, placement, scoring, sharding, train
from gga_jax.models import vit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNKS = (None, 1, 8, 32, 128)
CHUNK_DEVICES = (1, 8)  # Device counts the chunk sweep runs on.
NUM_CLASSES = 10
# docs/spec.md §7: a placement with recurrent edges may cost at most 1.5x the step without; the
# issue asks for 1.33x, i.e. one extra gradient-free forward on top of forward + backward.
RECURRENT_TARGET, RECURRENT_LIMIT = 1.33, 1.5


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", action="store_true", help="ViT-B/16 on one accelerator.")
    p.add_argument("--small", action="store_true", help="With --gpu: ViT-Ti/16, 64 px, on CPU.")
    p.add_argument("--out", default=None, help="Write all figures to this JSON file.")
    p.add_argument("--devices", default="1,2,4,8", help="CPU mode: forced host device counts.")
    p.add_argument("--width", type=int, default=64, help="CPU mode: ViT width (MLP 4x).")
    p.add_argument("--depth", type=int, default=4, help="CPU mode: ViT blocks L.")
    p.add_argument("--batch", type=int, default=64, help="CPU mode: global train batch.")
    p.add_argument("--examples", type=int, default=64, help="CPU mode: scoring examples.")
    p.add_argument("--micro_batch", type=int, default=32, help="CPU mode: scoring micro-batch.")
    p.add_argument("--steps", type=int, default=10, help="Train steps per timed repeat.")
    p.add_argument("--repeats", type=int, default=5, help="Timed repeats per figure (median).")
    # Internal: the CPU-mode parent starts itself with these in a subprocess per device count.
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker_out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--placement", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.small and not args.gpu:
        raise ValueError("--small shrinks the GPU mode; give it together with --gpu.")
    counts = [int(c) for c in args.devices.split(",")]
    if any(c < 1 or args.micro_batch % c or args.batch % c for c in counts):
        raise ValueError(
            f"Every device count in --devices={args.devices} must divide --batch={args.batch} "
            f"and --micro_batch={args.micro_batch}."
        )
    if args.examples % args.micro_batch:
        raise ValueError(f"--micro_batch={args.micro_batch} must divide --examples.")
    args.device_counts = counts
    return args


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls of fn(), after one warm-up call (which compiles)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def random_batch(num: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random NHWC float32 images and integer labels, as host arrays."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((num, image_size, image_size, 3), dtype=np.float32)
    return images, rng.integers(0, NUM_CLASSES, num).astype(np.int32)


def random_params(model, image_size: int) -> dict:
    """Random-init parameters with a random non-zero head.

    The head is zero-initialised, which would make every cotangent, so every
    G_ij and every srank, zero.
    """
    k_init, k_head = jax.random.split(jax.random.PRNGKey(0))
    example = jnp.zeros((1, image_size, image_size, 3))
    params = dict(jax.jit(model.init)(k_init, example)["params"])
    kernel = params["head"]["kernel"]
    scale = kernel.shape[0] ** -0.5
    params["head"] = {**params["head"], "kernel": scale * jax.random.normal(k_head, kernel.shape)}
    return params


def with_adapters(params: dict, model, image_size: int) -> dict:
    """`params` plus the random-init adapters of `model`'s edges (none for a plain model)."""
    if not model.edges:
        return params
    return {**params, "adapters": random_params(model, image_size)["adapters"]}


def xla_flops(compiled) -> float | None:
    """XLA's flop estimate of a compiled computation (per device), if the backend gives one."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


# --- training -------------------------------------------------------------------------


def train_runner(
    model, params, partitioner, images, labels, steps: int, cached=False, trainable="adapters"
):
    """(run, GFLOP per step): run() does `steps` train steps and returns the last metrics.

    The step is `train.make_train_step` with the adapters-and-head trainable set,
    the run's optimizer (docs/spec.md §5 SGD) and shardings from `train.state_shardings`;
    the GFLOP are XLA's cost analysis of the compiled step (per device). With
    `cached`, the batch carries its pass-1 values (train.plain_values), as a run
    with main's pass-1 cache feeds them after the first epoch. Like the inputs,
    they stay on the devices here: a real run also copies B x T x d floats per
    recurrent source from the host each step.
    """
    trainable, frozen = train.partition(params, train.TRAINABLE[trainable])
    opt = train.optimizer(defaults.base().train, 1000)
    shardings = train.state_shardings(
        partitioner, trainable, frozen, jax.eval_shape(opt.init, trainable)
    )
    # Copies: the step donates its trainable input, and `params` belongs to the caller.
    copy = lambda x, s: jax.device_put(jnp.array(x, copy=True), s)  # noqa: E731
    trainable = jax.tree_util.tree_map(copy, trainable, shardings["trainable"])
    opt_state = jax.jit(opt.init, out_shardings=shardings["opt_state"])(trainable)
    frozen = sharding.put(frozen, shardings["frozen"])
    batch = {"inputs": images, "labels": labels}
    if cached:
        sources = graph.recurrent_sources(model.edges)
        batch["pass1"] = train.plain_values(model, params, images, len(labels), sources)
    batch = partitioner.to_global(batch)
    step = train.make_train_step(model, opt, shardings=shardings)
    compiled = step.lower(trainable, frozen, opt_state, batch).compile()
    state = [trainable, opt_state]

    def run():
        for _ in range(steps):
            state[0], state[1], metrics = compiled(state[0], frozen, state[1], batch)
        return metrics

    flops = xla_flops(compiled)
    return run, None if flops is None else flops / 1e9


def interleaved(runs: dict, repeats: int) -> dict:
    """Median seconds of each zero-argument fn in `runs`, timed in turn within every repeat,
    so that load from other processes drifting during the measurement hits all alike."""
    for fn in runs.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def recurrent_placements(scores, depth: int, num: int, gamma: float = 0.6) -> dict:
    """{"PA": all parallel edges, "GGA": GGA over all n^2 candidates, "worst": ...}.

    "worst" is the GGA placement with its last picks replaced by recurrent edges
    out of the last nodes, (2L, 0) first: pass 1 then runs every block, the most
    a recurrent placement can cost. It is left out when GGA already picked an
    edge out of node 2L.
    """
    last = 2 * depth
    out = {
        "PA": placement.all_parallel(depth),
        "GGA": placement.gga(np.asarray(scores), num, gamma),
    }
    if not any(i == last for i, _ in out["GGA"]):
        recurrent = [(last, 0), (last - 1, 1), (last - 2, 2)]
        keep = [e for e in out["GGA"] if e not in recurrent][: num - len(recurrent)]
        out["worst"] = keep + recurrent
    return out


def describe_edges(edges) -> dict:
    recurrent = [e for e in edges if graph.edge_type(e) == "recurrent"]
    return {
        "edges": [list(e) for e in edges],
        "num_edges": len(edges),
        "num_recurrent": len(recurrent),
        "pass1_blocks": graph.pass1_blocks(edges),
    }


def forward_gflop(model, params, partitioner, images) -> float | None:
    """XLA GFLOP (per device) of one plain forward of the batch, the unit of pass 1's cost."""
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
    batch = partitioner.to_global({"inputs": images})["inputs"]
    params = sharding.put(params, partitioner.params(params))
    flops = xla_flops(forward.lower(params, batch).compile())
    return None if flops is None else flops / 1e9


def recurrent_figures(make_model, params_for, partitioner, images, labels, places, args) -> dict:
    """Train steps/s and GFLOP of each placement, with step-time and FLOP ratios to PA.

    "forwards" is a step's FLOPs in plain forwards of the batch: about 2 for PA
    (the frozen backbone needs no weight gradients, so its backward costs about
    one forward), plus up to 1 for pass 1 of a recurrent placement.
    """
    backbone = make_model(())
    forward = forward_gflop(backbone, params_for(backbone), partitioner, images)
    runs, out = {}, {}
    for place, edges in places.items():
        model = make_model(edges)
        # A recurrent placement is also timed with main's pass-1 cache (later epochs).
        for cached in (False, True) if graph.recurrent_sources(edges) else (False,):
            name = place + (" + pass-1 cache" if cached else "")
            runs[name], gflop = train_runner(
                model, params_for(model), partitioner, images, labels, args.steps, cached
            )
            out[name] = {**describe_edges(edges), "gflop_per_step": gflop, "cached": cached}
            out[name]["forward_gflop"] = forward
            out[name]["pass1_blocks"] = 0 if cached else graph.pass1_blocks(edges)
            if gflop and forward:
                out[name]["forwards"] = gflop / forward
    for name, seconds in interleaved(runs, args.repeats).items():
        f = out[name]
        f.update(steps_per_s=args.steps / seconds, step_s=seconds / args.steps)
        log(f"  {name}: {f['steps_per_s']:.2f} steps/s, {f['gflop_per_step']} GFLOP per step")
    pa = out["PA"]
    for f in out.values():
        f["time_ratio"] = f["step_s"] / pa["step_s"]
        if f["gflop_per_step"] and pa["gflop_per_step"]:
            f["flop_ratio"] = f["gflop_per_step"] / pa["gflop_per_step"]
    return out


# --- scoring --------------------------------------------------------------------------


def score_time(
    model, params, images, labels, args, *, mesh, chunk=None
) -> tuple[float, np.ndarray]:
    """(median seconds, scores) of score_edges over all n^2 edges, srank by float32 SVD."""

    def run():
        return scoring.score_edges(
            model,
            params,
            images,
            labels,
            micro_batch=args.micro_batch,
            chunk=chunk,
            srank_method="svd",
            mesh=mesh,
        )

    seconds = timed(run, args.repeats)
    return seconds, np.asarray(run())


# --- CPU mode: one worker per device count --------------------------------------------


def small_vit(args, edges=()):
    return vit.Model(
        NUM_CLASSES,
        width=args.width,
        depth=args.depth,
        num_heads=4,
        mlp_dim=4 * args.width,
        patch_size=4,
        edges=edges,
        adapter_rank=8,
    )


def worker(args) -> dict:
    """All CPU-mode figures on this process's args.worker forced host devices."""
    n_dev = args.worker
    if jax.device_count() != n_dev:
        raise ValueError(f"Expected {n_dev} forced host devices, found {jax.device_count()}.")
    partitioner = sharding.Partitioner(sharding.make_mesh([("data", n_dev)]))
    mesh = partitioner.mesh
    train_images, train_labels = random_batch(args.batch, 32, seed=1)
    images, labels = random_batch(args.examples, 32, seed=2)
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    backbone = small_vit(args)
    params = random_params(backbone, 32)
    # The same backbone and head for every placement: only the adapters are new.
    params_for = functools.partial(with_adapters, params, image_size=32)
    out = {"devices": n_dev, "device_kind": jax.devices()[0].device_kind}

    log(f"[{n_dev} devices] scoring")
    timing = functools.partial(score_time, backbone, params, images, labels, args)
    out["score_mesh_s"], scores = timing(mesh=mesh)
    out["scores"] = scores.tolist()
    if n_dev == 1:
        out["score_nomesh_s"], plain = timing(mesh=None)
        out["score_mesh_vs_nomesh_differ"] = int(np.sum(plain != scores))

    if n_dev in CHUNK_DEVICES:
        out["chunks"] = {}
        for chunk in CHUNKS:
            log(f"[{n_dev} devices] scoring, chunk {chunk}")
            row = {"mesh": timing(mesh=mesh, chunk=chunk)[0]}
            if n_dev == 1:
                row["nomesh"] = timing(mesh=None, chunk=chunk)[0]
            out["chunks"][str(chunk)] = row

    log(f"[{n_dev} devices] training: PA and recurrent placements")
    if args.placement:
        places = {k: [tuple(e) for e in v] for k, v in json.loads(args.placement).items()}
    else:
        places = recurrent_placements(scores, args.depth, 2 * args.depth)
    make_model = lambda edges: small_vit(args, edges)  # noqa: E731
    out["recurrent"] = recurrent_figures(
        make_model, params_for, partitioner, train_images, train_labels, places, args
    )
    return out


def run_worker(args, count: int, places: dict | None) -> dict:
    """Runs this script with --worker `count` in a subprocess on `count` forced CPU devices."""
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    env.update(
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={count}".strip(),
        OPENBLAS_NUM_THREADS="1",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join(filter(None, (REPO, env.get("PYTHONPATH")))),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "figures.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(count)]
        cmd += ["--worker_out", path, "--devices", args.devices]
        for name in ("width", "depth", "batch", "examples", "micro_batch", "steps", "repeats"):
            cmd += [f"--{name}", str(getattr(args, name))]
        if places:
            cmd += ["--placement", json.dumps(places)]
        subprocess.run(cmd, env=env, check=True, cwd=REPO)
        with open(path) as f:
            return json.load(f)


def run_cpu(args) -> dict:
    """One worker per device count; the first one's placements are reused by the others."""
    start = time.perf_counter()
    load = os.getloadavg()[0]
    results, places = [], None
    for count in args.device_counts:
        results.append(run_worker(args, count, places))
        places = places or {
            k: v["edges"] for k, v in results[0]["recurrent"].items() if not v["cached"]
        }
    n = graph.num_nodes(args.depth)
    summary = {
        "mode": "cpu",
        "jax": jax.__version__,
        "device_kind": results[0]["device_kind"],
        "cpus": os.cpu_count(),
        "load_average": [load, os.getloadavg()[0]],
        "seconds": time.perf_counter() - start,
        "date": datetime.date.today().isoformat(),
        "model": {
            "width": args.width,
            "depth": args.depth,
            "mlp_dim": 4 * args.width,
            "num_heads": 4,
            "patch_size": 4,
            "image_size": 32,
            "nodes": n,
            "edges": n * n,
        },
        "train_batch": args.batch,
        "examples": args.examples,
        "micro_batch": args.micro_batch,
        "results": results,
    }
    print_cpu(summary)
    return summary


def print_cpu(s: dict) -> None:
    m, results = s["model"], s["results"]
    print(
        f"jax {s['jax']} on {s['device_kind']}, {s['cpus']} cores shared by all forced host "
        f"devices (1-min load average {s['load_average'][0]:.2f} at start, "
        f"{s['load_average'][1]:.2f} at the end); {s['seconds']:.0f} s in all.\n"
        f"ViT width {m['width']}, depth {m['depth']}, MLP {m['mlp_dim']}, {m['num_heads']} "
        f"heads, {m['patch_size']} x {m['patch_size']} patches, {m['image_size']} px: "
        f"n = {m['nodes']} nodes, {m['edges']} edges. Forced host devices share the cores: "
        "these figures show that the sharded code runs and how its overheads grow, "
        "not speed-ups.\n"
    )
    first = np.asarray(results[0]["scores"])
    print(
        f"| devices | train steps/s (PA, batch {s['train_batch']}) | score_edges, mesh "
        f"({s['examples']} examples, micro-batch {s['micro_batch']}) | edges/s | "
        "sranks differing from 1 device |"
    )
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        differ = int(np.sum(np.asarray(r["scores"]) != first))
        pa = r["recurrent"]["PA"]
        print(
            f"| {r['devices']} | {pa['steps_per_s']:.2f} | {r['score_mesh_s']:.3f} s | "
            f"{m['edges'] / r['score_mesh_s']:.0f} | {differ} |"
        )
    one = results[0]
    if "score_nomesh_s" in one:
        print(
            f"\n1 device without a mesh: score_edges {one['score_nomesh_s']:.3f} s "
            f"({m['edges'] / one['score_nomesh_s']:.0f} edges/s); sranks differing from the "
            f"1-device mesh path: {one['score_mesh_vs_nomesh_differ']}."
        )
    print_chunks(s)
    print_recurrent(results)


def print_chunks(s: dict) -> None:
    swept = [r for r in s["results"] if "chunks" in r]
    if not swept:
        return
    edges = s["model"]["edges"]
    columns = []
    for r in swept:
        if "nomesh" in next(iter(r["chunks"].values())):
            columns.append((f"{r['devices']} device, no mesh", r, "nomesh"))
        plural = "s" if r["devices"] > 1 else ""
        columns.append((f"{r['devices']} device{plural}, mesh", r, "mesh"))
    print(f"\nScorer throughput, edges/s ({edges} edges), by chunk:\n")
    print("| chunk | " + " | ".join(c[0] for c in columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    for chunk in CHUNKS:
        cells = [f"{edges / r['chunks'][str(chunk)][key]:.0f}" for _, r, key in columns]
        print(f"| {chunk} | " + " | ".join(cells) + " |")


RECURRENT_HEADER = (
    "| placement | edges (recurrent) | pass-1 blocks | steps/s | time ratio | GFLOP/step | "
    "plain forwards/step | FLOP ratio |"
)


def recurrent_rows(figures: dict, prefix: str = "") -> None:
    """One table row per placement of recurrent_figures, then the non-PA edge lists."""
    fmt = lambda f, key, spec: "n/a" if f.get(key) is None else format(f[key], spec)  # noqa: E731
    for name, f in figures.items():
        print(
            f"| {prefix}{name} | {f['num_edges']} ({f['num_recurrent']}) | {f['pass1_blocks']} | "
            f"{f['steps_per_s']:.2f} | {f['time_ratio']:.3f} | {fmt(f, 'gflop_per_step', '.4g')} | "
            f"{fmt(f, 'forwards', '.2f')} | {fmt(f, 'flop_ratio', '.3f')} |"
        )


def print_recurrent_note() -> None:
    print(
        f"\nRecurrent overhead (target <= {RECURRENT_TARGET}x the step without recurrent edges, "
        f"docs/spec.md §7 <= {RECURRENT_LIMIT}x). GFLOP: XLA's cost analysis of the compiled "
        "step, per "
        "device; plain forwards/step: that over the XLA GFLOP of one plain forward of the batch. "
        "Timed repeats alternate between the placements.\n"
    )


def print_recurrent(results: list[dict]) -> None:
    print_recurrent_note()
    print("| devices " + RECURRENT_HEADER)
    print("| --- " + "| --- " * 8 + "|")
    for r in results:
        recurrent_rows(r["recurrent"], prefix=f"{r['devices']} | ")
    print_edge_lists(results[0]["recurrent"])


def print_edge_lists(figures: dict) -> None:
    for name, f in figures.items():
        if name != "PA" and not f["cached"]:
            print(f"\n{name} edges: {[tuple(e) for e in f['edges']]}")


# --- GPU mode -------------------------------------------------------------------------


def gpu_setup(small: bool) -> dict:
    """The model, its sizes and the scoring / training batches of the GPU mode."""
    if small:
        cfg = dict(variant="Ti/16", image_size=64, examples=32, micro_batch=16, batch=16)
    else:
        cfg = dict(variant="B/16", image_size=224, examples=512, micro_batch=128, batch=128)
    return {**cfg, "steps": 3 if small else 10, "repeats": 2 if small else 5, "num": 24}


def score_breakdown(model, params, images, labels, cfg) -> dict:
    """Seconds of score_edges end to end and of its parts, each jitted alone (as score_gpu.py)."""
    mb = cfg["micro_batch"]
    out = {"srank_method": f"auto on {jax.default_backend()}"}

    def end_to_end():
        return scoring.score_edges(model, params, images, labels, micro_batch=mb)

    out["end_to_end_s"] = timed(end_to_end, cfg["repeats"])
    scores = np.asarray(end_to_end())
    with jax.default_matmul_precision("highest"):
        nodes = jax.jit(
            lambda p, x, y: scoring.node_values_and_cotangents(
                model, p, x, y, scale=1 / cfg["examples"]
            )
        )
        xs, gs = nodes(params, images[:mb], labels[:mb])
        products = jax.jit(
            lambda a, b: jnp.einsum("imd,jme->ijde", a, b, precision=scoring.HIGHEST)
        )
        g = products(xs, gs)
        out["forward_backward_s"] = timed(
            lambda: nodes(params, images[:mb], labels[:mb]), cfg["repeats"]
        )
        out["products_s"] = timed(lambda: products(xs, gs), cfg["repeats"])
    ranks = jax.jit(lambda m: scoring.srank(m.reshape(-1, *m.shape[-2:]), method="auto"))
    out["srank_s"] = timed(lambda: ranks(g), cfg["repeats"])
    out["micro_batches"] = cfg["examples"] // mb
    seq_len = xs.shape[1] // mb
    flops = scoring.scoring_flops(cfg["examples"], seq_len, xs.shape[-1], scores.size)
    out["products_tflop"] = flops["total"] / 1e12
    return out, scores


def run_gpu(args) -> dict:
    cfg = gpu_setup(args.small)
    size = cfg["image_size"]
    backbone = vit.Model(1000, variant=cfg["variant"])
    depth = backbone.depth
    params = random_params(backbone, size)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((cfg["examples"], size, size, 3), dtype=np.float32))
    labels = jnp.asarray(rng.integers(0, 1000, cfg["examples"]).astype(np.int32))
    log(f"scoring {graph.num_nodes(depth) ** 2} edges on {cfg['examples']} examples")
    score, scores = score_breakdown(backbone, params, images, labels, cfg)

    partitioner = sharding.Partitioner(sharding.make_mesh([("data", -1)]))
    train_images, train_labels = random_batch(cfg["batch"], size, seed=1)
    places = recurrent_placements(scores, depth, cfg["num"])
    make_model = lambda edges: vit.Model(1000, variant=cfg["variant"], edges=edges)  # noqa: E731
    params_for = functools.partial(with_adapters, params, image_size=size)
    ns = argparse.Namespace(steps=cfg["steps"], repeats=cfg["repeats"])
    log("training")
    recurrent = recurrent_figures(
        make_model, params_for, partitioner, train_images, train_labels, places, ns
    )
    pa_edges = tuple(placement.all_parallel(depth))
    others = {  # name: (model, trainable set)
        "PA": (make_model(pa_edges), "adapters"),
        "PA, remat block": (
            vit.Model(1000, variant=cfg["variant"], edges=pa_edges, remat="block"),
            "adapters",
        ),
        "full fine-tuning": (make_model(()), "full_finetune"),
    }
    runs = {
        name: train_runner(
            model, params_for(model), partitioner, train_images, train_labels, cfg["steps"],
            trainable=kind,
        )[0]
        for name, (model, kind) in others.items()
    }  # fmt: skip
    images_per_s = {
        name: cfg["batch"] * cfg["steps"] / seconds
        for name, seconds in interleaved(runs, cfg["repeats"]).items()
    }
    summary = {
        "mode": "gpu-small" if args.small else "gpu",
        "jax": jax.__version__,
        "device_kind": jax.devices()[0].device_kind,
        "date": datetime.date.today().isoformat(),
        **cfg,
        "scoring": score,
        "recurrent": recurrent,
        "images_per_s": images_per_s,
    }
    print_gpu(summary)
    return summary


def print_gpu(s: dict) -> None:
    sc = s["scoring"]
    n2 = graph.num_nodes(vit.decode_variant(s["variant"])["depth"]) ** 2
    print(
        f"jax {s['jax']} on {s['device_kind']}; ViT-{s['variant']}, random weights, "
        f"{s['image_size']} px\n"
    )
    print("| part | time |")
    print("| --- | --- |")
    mb = s["micro_batch"]
    k = sc["micro_batches"]
    print(
        f"| forward + backward ({k} micro-batches of {mb}) | "
        f"{k} x {sc['forward_backward_s']:.3f} s |"
    )
    rate = sc["products_tflop"] / (k * sc["products_s"])
    print(
        f'| products x_i^T g_j ({sc["products_tflop"]:.3g} TFLOP, "highest") | '
        f"{k} x {sc['products_s']:.3f} s ({rate:.3g} TFLOP/s) |"
    )
    print(f"| srank of {n2} matrices ({sc['srank_method']}) | {sc['srank_s']:.3f} s |")
    print(
        f"| end to end (`score_edges`, {n2} edges, {s['examples']} examples) | "
        f"{sc['end_to_end_s']:.3f} s |"
    )
    print(f"\nAdapter training, batch {s['batch']}, rank 8:")
    print_recurrent_note()
    print(RECURRENT_HEADER)
    print("| --- " * 8 + "|")
    recurrent_rows(s["recurrent"])
    print_edge_lists(s["recurrent"])
    print(f"\nTraining throughput, batch {s['batch']} (timed together):\n")
    print("| run | images/s |")
    print("| --- | --- |")
    for name, rate in s["images_per_s"].items():
        print(f"| {name} | {rate:.1f} |")


def main():
    args = parse_args()
    if args.worker is not None:
        figures = worker(args)
        with open(args.worker_out, "w") as f:
            json.dump(figures, f)
        return
    summary = run_gpu(args) if args.gpu else run_cpu(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

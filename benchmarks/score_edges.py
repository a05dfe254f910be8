"""All-edge scoring (docs/spec.md §3) against one backward pass per edge, on one model and batch.

The naive way to get the linear-adapter gradient G_ij of every edge is to put a
zero d x d adapter on that edge alone and differentiate: n^2 forward + backward
passes. `scoring.edge_gradients` gets all n^2 from one forward and one
backward. This script times both on the same random-init ViT (the head gets a
random non-zero kernel so that the gradients are not all zero), checks that the
naive gradient of every sampled edge equals the corresponding G_ij, and prints
the speed-up and the docs/spec.md §7 FLOP counts.

    PYTHONPATH=. python benchmarks/score_edges.py

Measured (defaults: ViT-Ti/16, 224 px, batch 8, n = 25, 625 edges; jax 0.10.2
on a 2-vCPU AMD EPYC shared with other jobs, so two runs spread widely):
edge_gradients 2.0-2.6 s, score_edges 2.9-3.0 s (forward + backward, the n^2
products and the batched SVD take about a third each); the naive method
0.48-0.82 s per edge (median over 12 of 625 edges, extrapolated: 298-512 s);
speed-up 149-199x for edge_gradients and 104-169x for score_edges. Naive and
all-edge gradients agree to 1.6e-6 (max |difference| / max |G_ij|). Scoring
matmuls: 72.65 GFLOP here; ViT-B/16 at 224 px with 512 examples, 74.37 TFLOP
(docs/spec.md §7: ~74.3). XLA counts 115.8 GFLOP for the compiled edge_gradients
(forward, backward and products).
"""

import os

# Batched SVD on CPU is much slower when OpenBLAS spawns its own threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from gga_jax import graph, scoring
from gga_jax.models import vit

MAX_REL_ERR = 1e-4  # Naive vs all-edge gradient, relative to the largest |G_ij| entry.


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="Ti/16", help="ViT variant, e.g. Ti/16 or B/16.")
    p.add_argument("--image_size", type=int, default=224, help="Square image side in pixels.")
    p.add_argument("--batch", type=int, default=8, help="Examples in the scoring batch.")
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument(
        "--naive_edges", type=int, default=12, help="Edges the naive method is timed on."
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=None, help="score_edges chunk (None: all at once).")
    p.add_argument("--micro_batch", type=int, default=None, help="Examples per forward/backward.")
    p.add_argument("--repeats", type=int, default=3, help="Timed runs per measurement (median).")
    args = p.parse_args()
    if args.naive_edges < 3:
        raise ValueError(
            f"--naive_edges must be >= 3 (one recurrent, sequential and long-range edge), "
            f"got {args.naive_edges}."
        )
    return args


def timed(fn, repeats: int) -> tuple[float, float]:
    """(seconds of the first call, which compiles; median seconds of `repeats` later calls)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def setup(args):
    """The model, its parameters (random non-zero head) and a random batch."""
    model = vit.Model(args.num_classes, variant=args.variant)
    k_init, k_head, k_img, k_lab = jax.random.split(jax.random.PRNGKey(args.seed), 4)
    images = jax.random.normal(k_img, (args.batch, args.image_size, args.image_size, 3))
    labels = jax.random.randint(k_lab, (args.batch,), 0, args.num_classes)
    params = dict(model.init(k_init, images)["params"])
    # The head is zero-initialised, which would make every cotangent, so every G_ij, zero.
    kernel = params["head"]["kernel"]
    scale = kernel.shape[0] ** -0.5
    params["head"] = {**params["head"], "kernel": scale * jax.random.normal(k_head, kernel.shape)}
    return model, params, images, labels


def sample_edges(depth: int, num: int, seed: int) -> list[graph.Edge]:
    """`num` distinct edges: one recurrent, sequential, long-range (and parallel if
    num >= 4) edge first, then uniformly random others."""
    rng = np.random.default_rng(seed)
    edges = list(graph.candidates(depth))
    wanted = ("recurrent", "sequential", "long_range", "parallel")[:num]
    picked = []
    for kind in wanted:
        of_kind = [e for e in edges if graph.edge_type(e) == kind]
        picked.append(of_kind[rng.integers(len(of_kind))])
    rest = [e for e in edges if e not in picked]
    order = rng.permutation(len(rest))[: num - len(picked)]
    return picked + [rest[i] for i in order]


def naive_gradient_fn(args, edge, params, images, labels):
    """A jitted zero-argument function: d(mean loss)/d(adapters) with one linear adapter."""
    model = vit.Model(args.num_classes, variant=args.variant, edges=(edge,), adapter_kind="linear")
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)["params"]["adapters"]
    adapters = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def loss(adapters, params, images, labels):
        logits = model.apply({"params": {**params, "adapters": adapters}}, images)
        return jnp.mean(scoring.softmax_xent(logits, labels))

    # Everything is an argument: a closed-over batch would be constant-folded by XLA.
    with jax.default_matmul_precision("highest"):
        grad = jax.jit(jax.grad(loss)).lower(adapters, params, images, labels).compile()
    name = f"edge_{edge[0]}_{edge[1]}"
    return lambda: grad(adapters, params, images, labels)[name]["kernel"]


def spec_flops(num_examples: int, seq_len: int, width: int, n: int) -> float:
    """docs/spec.md §7 as written: D n^2 (2 n_seq - 1) d^2 + (D n^2 d^2 + n^2 d^2)."""
    d2, n2 = width**2, n**2
    return num_examples * n2 * (2 * seq_len - 1) * d2 + (num_examples * n2 * d2 + n2 * d2)


def xla_flops(model, params, images, labels, micro_batch) -> float | None:
    """XLA's flop estimate of the compiled edge_gradients, if the backend gives one."""
    fn = jax.jit(lambda p, x, y: scoring.edge_gradients(model, p, x, y, micro_batch=micro_batch))
    cost = fn.lower(params, images, labels).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return None if not cost or "flops" not in cost else float(cost["flops"])


def breakdown(model, params, images, labels, g, repeats):
    """Median seconds of the stages of score_edges on the whole batch, each jitted alone."""
    fwd_bwd = jax.jit(lambda *a: scoring.node_values_and_cotangents(model, *a))
    xs, gs = fwd_bwd(params, images, labels)
    pairs = jax.jit(lambda a, b: jnp.einsum("imd,jme->ijde", a, b, precision=scoring.HIGHEST))
    ranks = jax.jit(lambda m: scoring.srank(m.reshape(-1, *m.shape[-2:])))
    g = jnp.asarray(g)
    return {
        "forward + backward (node values, cotangents)": timed(
            lambda: fwd_bwd(params, images, labels), repeats
        )[1],
        "all-pair products x_i^T g_j (n^2 d x d)": timed(lambda: pairs(xs, gs), repeats)[1],
        "srank of n^2 matrices (batched SVD)": timed(lambda: ranks(g), repeats)[1],
    }


def time_all_edges(args, model, params, images, labels):
    """Times edge_gradients and score_edges; returns (G as (n, n, d, d), seconds, seconds)."""
    mb = args.micro_batch
    gradients = lambda: scoring.edge_gradients(model, params, images, labels, micro_batch=mb)
    first, t_all = timed(gradients, args.repeats)
    g = np.asarray(gradients())
    print(f"edge_gradients: {t_all:.3f} s median (first call incl. compile {first:.1f} s)")
    scores = lambda: scoring.score_edges(
        model, params, images, labels, micro_batch=mb, chunk=args.chunk
    )
    first, t_score = timed(scores, args.repeats)
    print(f"score_edges (gradients + srank): {t_score:.3f} s median (first {first:.1f} s)")
    for stage, seconds in breakdown(model, params, images, labels, g, args.repeats).items():
        print(f"  {stage}: {seconds:.3f} s")
    return g, t_all, t_score


def time_naive(args, depth, params, images, labels, g) -> float:
    """Median seconds of one naive per-edge gradient; fails if one differs from G_ij."""
    per_edge, errors = [], []
    for edge in sample_edges(depth, args.naive_edges, args.seed):
        start = time.perf_counter()
        fn = naive_gradient_fn(args, edge, params, images, labels)
        compile_s = time.perf_counter() - start
        _, seconds = timed(fn, args.repeats)
        naive = np.asarray(fn())
        err = float(np.max(np.abs(naive - g[edge])) / np.max(np.abs(g[edge])))
        errors.append(err)  # NaN (a zero G_ij) fails the check below.
        per_edge.append(seconds)
        print(
            f"  {str(edge):>8} {graph.edge_type(edge):<10} {seconds:.3f} s "
            f"(compile {compile_s:.1f} s)  max|naive - G| / max|G| = {err:.1e}"
        )
    worst = float(np.max(errors))
    print(f"max relative error over the sampled edges: {worst:.2e} (tolerance {MAX_REL_ERR:g})")
    if not worst <= MAX_REL_ERR:
        raise SystemExit(f"FAIL: naive gradients differ from G_ij by {worst:.2e} > {MAX_REL_ERR}.")
    median, mean = statistics.median(per_edge), statistics.mean(per_edge)
    print(f"seconds per edge: median {median:.3f}, mean {mean:.3f}")
    return median


def print_flops(args, model, params, images, labels, seq_len, t_all):
    """Scoring-matmul FLOPs (ours vs docs/spec.md §7) here and for ViT-B/16, and XLA's count."""
    n = graph.num_nodes(model.depth)
    ours = scoring.scoring_flops(args.batch, seq_len, model.width, n * n)["total"]
    spec = spec_flops(args.batch, seq_len, model.width, n)
    print(
        f"this config: scoring_flops {ours / 1e9:.2f} GFLOP, "
        f"docs/spec.md §7 formula {spec / 1e9:.2f} GFLOP"
    )
    b16 = vit.decode_variant("B/16")
    n, seq_len = graph.num_nodes(b16["depth"]), (224 // 16) ** 2 + 1
    ours = scoring.scoring_flops(512, seq_len, b16["width"], n * n)["total"]
    spec = spec_flops(512, seq_len, b16["width"], n)
    print(
        f"ViT-B/16, 224 px, 512 examples: scoring_flops {ours / 1e12:.2f} TFLOP, "
        f"docs/spec.md §7 formula {spec / 1e12:.2f} TFLOP (SPEC text: ~74.3)"
    )
    flops = xla_flops(model, params, images, labels, args.micro_batch)
    if flops is None:
        print("XLA cost analysis: no flop estimate on this backend")
        return
    # XLA counts the body of the micro-batch loop once, not once per iteration.
    trips = args.batch // args.micro_batch if args.micro_batch else 1
    total = flops * trips / 1e9
    print(
        f"XLA cost analysis of the compiled edge_gradients (forward + backward + products): "
        f"{flops / 1e9:.2f} GFLOP x {trips} micro-batch(es) = {total:.2f} GFLOP, "
        f"i.e. {total / t_all:.1f} GFLOP/s measured"
    )


def main():
    args = parse_args()
    model, params, images, labels = setup(args)
    n = graph.num_nodes(model.depth)
    num_edges = n * n
    seq_len = (args.image_size // model.patch_size[0]) ** 2 + (model.pool_type == "tok")
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({os.cpu_count()} CPUs, "
        f"1-min load average {os.getloadavg()[0]:.2f} at start)"
    )
    print(
        f"ViT-{args.variant} at {args.image_size} px: L={model.depth}, n={n} nodes, "
        f"N={num_edges} edges, d={model.width}, T={seq_len} tokens; batch {args.batch}, "
        f"micro_batch {args.micro_batch}, chunk {args.chunk}, repeats {args.repeats}"
    )

    print("\n== all edges at once ==")
    g, t_all, t_score = time_all_edges(args, model, params, images, labels)

    print("\n== naive: one zero linear adapter per edge, one jax.grad each ==")
    t_edge = time_naive(args, model.depth, params, images, labels, g)
    t_naive = t_edge * num_edges
    print(
        f"naive timed on {args.naive_edges} of {num_edges} edges, extrapolated: "
        f"{t_edge:.3f} s (median) x {num_edges} = {t_naive:.1f} s"
    )

    print("\n== speed-up ==")
    print(f"naive / edge_gradients: {t_naive:.1f} s / {t_all:.3f} s = {t_naive / t_all:.0f}x")
    print(f"naive / score_edges:    {t_naive:.1f} s / {t_score:.3f} s = {t_naive / t_score:.0f}x")

    print("\n== FLOPs of the scoring matmuls (docs/spec.md §7) ==")
    print_flops(args, model, params, images, labels, seq_len, t_all)
    print(f"1-min load average at the end: {os.getloadavg()[0]:.2f} (other processes skew timings)")


if __name__ == "__main__":
    main()

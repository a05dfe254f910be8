"""All-edge scoring of ViT-B/16 on an accelerator: time, where it goes, and exactness.

    PYTHONPATH=. python benchmarks/score_gpu.py --batch 512 --micro_batch 128

Scores all n^2 = 625 edges of a ViT-B/16 (random weights, random head) on a
batch of random 224 px images, end to end including srank, and splits the time
into the forward/backward, the n^2 products x_i^T g_j and the batched SVD. Then
checks every srank against a float64 NumPy SVD of the same G_ij. Then, for every
products precision of scoring.PRODUCTS (the dot algorithms emulating float32 with
3 or 6 bf16 passes, TF32, one bf16 pass), times the products and counts the sranks
(float64 Gram eigenvalues) that differ from the float64 reference and whether
GGA's 24 picks change: the fast path's verdict. Absolute times mean something
only on a GPU/TPU (a CPU accepts the presets but computes in float32); on CPU use
benchmarks/score_edges.py.
"""

import argparse
import time

import jax
import numpy as np

from gga_jax import graph, placement, scoring
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

    # score_edges checks its inputs on the host, then runs jitted: not wrapped in a jit.
    def end_to_end(p, x, y):
        return scoring.score_edges(model, p, x, y, micro_batch=args.micro_batch)

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

    full = scoring.edge_gradients(model, params, images, labels, micro_batch=mb)
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
    n = graph.num_nodes(model.depth)
    reference = placement.gga(want.reshape(n, n).astype(np.float64), 24, 0.6)
    for products in scoring.PRODUCTS:
        try:
            pair = jax.jit(lambda a, b, pr=products: scoring._pair_gradients(a, b, None, pr))
            t_pair, _ = timed(pair, xs, gs)
            g = scoring.edge_gradients(
                model, params, images, labels, micro_batch=mb, products=products
            )
        except Exception as e:  # a preset this device does not run
            print(f"  products {products!r}: not supported here ({type(e).__name__})")
            continue
        ranks = np.asarray(scoring.srank(g.reshape(-1, *g.shape[-2:]), method="gram64"))
        picks = placement.gga(ranks.reshape(n, n).astype(np.float64), 24, 0.6)
        same = "same" if picks == reference else "DIFFERENT"
        print(
            f"  products {products!r}: {micro} x {t_pair:.3f} s; {np.sum(ranks != want)} of "
            f"{want.size} sranks (gram64) differ from float64; GGA's 24 picks {same}"
        )


if __name__ == "__main__":
    main()

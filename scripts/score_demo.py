"""Scores every edge of a tiny random ViT and prints the GGA placement.

    python scripts/score_demo.py --out /tmp/gga_demo

One forward and one backward give all n^2 linear-adapter gradients (docs/spec.md §3);
their sranks form the (n, n) score matrix, from which GGA picks --num edges
(docs/spec.md §4). Writes scores.npy and scores.png (chosen edges circled) to --out.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # batched SVD on CPU is far slower without it

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from gga_jax import graph, placement, plots, scoring  # noqa: E402
from gga_jax.models import vit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/gga_demo")
    parser.add_argument("--num", type=int, default=6, help="edges GGA picks")
    parser.add_argument("--gamma", type=float, default=0.6)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    model = vit.Model(10, width=64, depth=4, num_heads=4, mlp_dim=128, patch_size=4)
    images = jax.random.normal(jax.random.PRNGKey(0), (args.batch, 16, 16, 3))
    labels = jax.random.randint(jax.random.PRNGKey(1), (args.batch,), 0, 10)
    params = jax.jit(model.init)(jax.random.PRNGKey(2), images)["params"]
    # A random head stands in for the pre-trained one (docs/spec.md §3 step 1).
    params["head"]["kernel"] = 0.1 * jax.random.normal(
        jax.random.PRNGKey(3), params["head"]["kernel"].shape
    )

    start = time.perf_counter()
    scores = np.asarray(scoring.score_edges(model, params, images, labels))
    seconds = time.perf_counter() - start
    print(f"scored {scores.size} edges of a {model.depth}-block ViT in {seconds:.1f} s")
    edges = placement.gga(scores, args.num, gamma=args.gamma)
    for rank, edge in enumerate(edges, 1):
        print(f"{rank:2d}. {edge} {graph.edge_type(edge):10s} srank {scores[edge]:.0f}")
    np.save(os.path.join(args.out, "scores.npy"), scores)
    plots.score_heatmap(
        scores, edges, os.path.join(args.out, "scores.png"), "srank of G_ij, GGA picks"
    )
    print(f"wrote {args.out}/scores.npy and {args.out}/scores.png")


if __name__ == "__main__":
    main()

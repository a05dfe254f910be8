"""Memory plan of all-edge scoring (SPEC §3, §7) for ViT-B/16 and ViT-g/14.

    PYTHONPATH=. python benchmarks/memory_plan.py

Every size is read from jax.eval_shape of the model (parameter shapes, the
n = 2L + 1 node values (B, T, d) and their dtype), so nothing is allocated and
no model dimension is typed in here. Rows, in bytes:
  parameters          the backbone plus a 1000-class head;
  nodes + cotangents  the x_k and dL/dx_k that scoring.score_edges keeps:
                      2 n D T d for the whole scoring batch (chunk set) and
                      2 n M T d for one micro-batch of M (chunk None);
  G, all edges        the n^2 matrices G_ij of d x d (chunk None);
  G, chunk of c       c matrices at a time (chunk = c).
Activations of the forward/backward itself come on top of these.

Output (jax 0.10.2, CPU; 1 GiB = 2^30 bytes):

| quantity | B/16, tok, 224 px | g/14, map, 224 px |
| --- | --- | --- |
| parameters | 86,566,888 = 330.2 MiB | 1,037,857,384 = 3.87 GiB |
| nodes n, tokens T, width d | 25, 197, 768 | 81, 256, 1408 |
| nodes + cotangents, D = 512 | 14.43 GiB | 111.38 GiB |
| nodes + cotangents, M = 64 / 8 | 1.80 GiB | 1.74 GiB |
| G, all n^2 edges | 1.37 GiB | 48.45 GiB |
| G, chunk of 1 | 2.2 MiB | 7.6 MiB |
| G, chunk of 64 | 144.0 MiB | 484.0 MiB |
| G, chunk of 625 | 1.37 GiB | 4.62 GiB |

Reading: for g/14 on D = 512 the chunked path's 111 GiB of node values and
cotangents exceed an 80 GB H100 and nearly fill a 141 GB H200, while chunk None
holds 48.45 GiB of G plus 1.74 GiB per micro-batch of 8 (and a second 48 GiB
if XLA materialises each micro-batch's product before adding it: not measured
here), hence chunk None and micro-batch 8 in configs/vit_g14.py.
"""

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np

from gga_jax.models import vit

MODELS = (  # (variant, pool_type, micro-batch of the chunk-None path)
    ("B/16", "tok", 64),
    ("g/14", "map", 8),
)


def plan(
    variant: str,
    pool_type: str,
    *,
    image_size: int = 224,
    num_examples: int = 512,
    micro_batch: int = 64,
    chunks: tuple[int, ...] = (1, 64, 625),
    num_classes: int = 1000,
) -> dict:
    """Byte counts of the scorer for one model, from jax.eval_shape (nothing is allocated)."""
    model = vit.Model(num_classes, variant=variant, pool_type=pool_type)
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)["params"]
    _, out = jax.eval_shape(
        lambda p, x: model.apply({"params": p}, x, return_nodes=True), params, images
    )
    nodes = out["nodes"]
    n, (_, tokens, width) = len(nodes), nodes[0].shape
    # The scorer holds every node value and cotangent as float32 (scoring.py casts up).
    item = np.dtype(jnp.promote_types(nodes[0].dtype, jnp.float32)).itemsize
    leaves = jax.tree_util.tree_leaves(params)
    return {
        "params": sum(math.prod(x.shape) for x in leaves),
        "param_bytes": sum(math.prod(x.shape) * x.dtype.itemsize for x in leaves),
        "n": n,
        "tokens": tokens,
        "width": width,
        "micro_batch": micro_batch,
        "nodes_batch": 2 * n * num_examples * tokens * width * item,
        "nodes_micro": 2 * n * micro_batch * tokens * width * item,
        "g_all": n * n * width * width * item,
        "g_chunk": {c: c * width * width * item for c in chunks},
    }


def human(num_bytes: int) -> str:
    if num_bytes >= 2**30:
        return f"{num_bytes / 2**30:.2f} GiB"
    return f"{num_bytes / 2**20:.1f} MiB"


def table(plans: dict[str, dict], num_examples: int) -> str:
    values = list(plans.values())
    rows = [
        ("parameters", [f"{p['params']:,} = {human(p['param_bytes'])}" for p in values]),
        ("nodes n, tokens T, width d", [f"{p['n']}, {p['tokens']}, {p['width']}" for p in values]),
        (f"nodes + cotangents, D = {num_examples}", [human(p["nodes_batch"]) for p in values]),
        (
            "nodes + cotangents, M = " + " / ".join(str(p["micro_batch"]) for p in values),
            [human(p["nodes_micro"]) for p in values],
        ),
        ("G, all n^2 edges", [human(p["g_all"]) for p in values]),
    ]
    for c in values[0]["g_chunk"]:
        rows.append((f"G, chunk of {c}", [human(p["g_chunk"][c]) for p in values]))
    lines = ["| quantity | " + " | ".join(plans) + " |", "| --- " * (len(plans) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--num_examples", type=int, default=512, help="Scoring examples D.")
    p.add_argument("--chunks", default="1,64,625", help="Comma-separated chunk sizes.")
    args = p.parse_args()
    chunks = tuple(int(c) for c in args.chunks.split(","))
    plans = {
        f"{variant}, {pool}, {args.image_size} px": plan(
            variant,
            pool,
            image_size=args.image_size,
            num_examples=args.num_examples,
            micro_batch=micro,
            chunks=chunks,
        )
        for variant, pool, micro in MODELS
    }
    print(table(plans, args.num_examples))


if __name__ == "__main__":
    main()

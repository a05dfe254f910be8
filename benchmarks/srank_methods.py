"""Ways to compute srank on an accelerator: speed and agreement with float64.

    PYTHONPATH=. python benchmarks/srank_methods.py --batch 128

Takes the 625 edge gradients G_ij of a ViT-B/16 (random weights and head,
random 224 px images) and computes their sranks with several methods, timing
each and counting how many of them differ from a float64 NumPy SVD. The
library's methods run as `scoring.srank(..., method=...)` with jax_enable_x64
off, as in a real run ("gram64" turns float64 on for itself); the float32
eigvalsh and the float64 SVD are comparisons only.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from gga_jax import scoring
from gga_jax.models import vit


def srank_of_values(s, eta=0.01):
    s = jnp.sort(s, axis=-1)[..., ::-1]
    return scoring._srank_from_singular_values(s, eta)


def eigvalsh_f32(g):
    gram = jnp.einsum("eij,eik->ejk", g, g, precision="highest")
    return srank_of_values(jnp.sqrt(jnp.clip(jnp.linalg.eigvalsh(gram), 0)))


def svd_f64(g):
    with jax.enable_x64(True):
        return srank_of_values(jnp.linalg.svd(g.astype(jnp.float64), compute_uv=False))


METHODS = {
    "svd f32 (batched)": lambda g: scoring.srank(g, method="svd"),
    "svd f32 (lax.map)": lambda g: jax.lax.map(lambda m: scoring.srank(m, method="svd"), g),
    "eigvalsh(G^T G) f32": eigvalsh_f32,
    "gram64": lambda g: scoring.srank(g, method="gram64"),
    "svd f64 (batched)": svd_f64,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}")
    model = vit.Model(1000, variant="B/16")
    rng = jax.random.PRNGKey(0)
    images = jax.random.normal(rng, (args.batch, 224, 224, 3), jnp.float32)
    labels = jax.random.randint(rng, (args.batch,), 0, 1000)
    params = jax.jit(model.init)(rng, images[:1])["params"]
    params["head"]["kernel"] = 0.03 * jax.random.normal(
        rng, params["head"]["kernel"].shape, jnp.float32
    )
    g = scoring.edge_gradients(model, params, images, labels, micro_batch=min(args.batch, 128))
    g = g.reshape(-1, *g.shape[-2:]).astype(jnp.float32)
    want = np.array([scoring.srank_reference(m) for m in np.asarray(g)])
    print(
        f"{g.shape[0]} matrices {g.shape[1:]}; "
        f"float64 NumPy reference sranks {want.min()}..{want.max()}"
    )
    for name, fn in METHODS.items():
        f = jax.jit(fn)
        got = np.asarray(jax.block_until_ready(f(g)))
        start = time.perf_counter()
        jax.block_until_ready(f(g))
        seconds = time.perf_counter() - start
        diff = np.abs(got - want)
        print(f"{name:24s} {seconds:8.3f} s  differ {np.sum(diff > 0):4d}  max |diff| {diff.max()}")


if __name__ == "__main__":
    main()

"""Ways to compute srank on an accelerator: speed and agreement with float64.

    PYTHONPATH=. python benchmarks/srank_methods.py --batch 128

Takes the 625 edge gradients G_ij of a ViT-B/16 (random weights and head,
random 224 px images) and computes their sranks with several methods, timing
each and counting how many of them differ from a float64 NumPy SVD.
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)  # for the float64 methods

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from gga_jax import scoring  # noqa: E402
from gga_jax.models import vit  # noqa: E402


def srank_of_values(s, eta=0.01):
    s = jnp.sort(s, axis=-1)[..., ::-1]
    return scoring._srank_from_singular_values(s, eta)


METHODS = {
    "svd f32 (batched)": lambda g: scoring.srank(g.astype(jnp.float32)),
    "svd f32 (lax.map)": lambda g: jax.lax.map(lambda m: scoring.srank(m), g.astype(jnp.float32)),
    "eigvalsh(G^T G) f32": lambda g: srank_of_values(
        jnp.sqrt(
            jnp.clip(jnp.linalg.eigvalsh(jnp.einsum("eij,eik->ejk", g, g, precision="highest")), 0)
        )
    ),
    "eigvalsh(G^T G) f64": lambda g: srank_of_values(
        jnp.sqrt(
            jnp.clip(
                jnp.linalg.eigvalsh(
                    jnp.einsum("eij,eik->ejk", g.astype(jnp.float64), g.astype(jnp.float64))
                ),
                0,
            )
        )
    ),
    "svd f64 (batched)": lambda g: srank_of_values(
        jnp.linalg.svd(g.astype(jnp.float64), compute_uv=False)
    ),
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
    s64 = np.linalg.svd(np.asarray(g, np.float64), compute_uv=False)
    want = np.asarray(srank_of_values(jnp.asarray(s64)))
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

"""The CLI: one config in, one workdir out (the run itself is gga_jax.pipeline).

    python -m gga_jax.main --config=configs/default.py --workdir=/tmp/gga_default
    python -m gga_jax.main --config=configs/default.py --workdir=/tmp/x --config.train.lr=0.01
    python -m gga_jax.main --config=configs/vit_g14.py:policy=gga --dry_run   # memory plan

    python -m gga_jax.main --config=default --workdir=/tmp/x   # a packaged config, by name

    python -m gga_jax.main --list=configs   # the packaged configs, one line each
    python -m gga_jax.main --list=arms      # every valid arm
    python -m gga_jax.main --list=keys --config=configs/default.py   # keys and values

The whole config is checked before any data or weights are read; a mistake the
user can fix (a config value, a path, a dataset) prints one line and exits 2,
writing nothing. --traceback (or GGA_JAX_TRACEBACK=1) shows the Python trace.
Ctrl-C prints the command that resumes the run; the same command resumes it.
"""

from __future__ import annotations

import os

# Batched SVD (scoring) on CPU runs far slower with threaded OpenBLAS; must precede numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import ast  # noqa: E402

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from gga_jax import cli, defaults, pipeline, sharding, validation  # noqa: E402

LISTINGS = ("configs", "arms", "keys")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file or packaged config name, e.g. configs/default.py:arg or default:arg.",
    lock_config=True,
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_bool(
    "dry_run",
    False,
    "Print the per-device memory plan of the config on its mesh (params, optimizer state, "
    "activations, scorer) from compiled memory analysis, then exit; reads no data or weights.",
)
flags.DEFINE_enum(
    "list",
    None,
    LISTINGS,
    "Print the packaged configs (--config takes their names), the valid arms, or every "
    "config key with its value (of --config, else of the defaults), then exit.",
)
cli.define_traceback_flag()


def main(argv) -> None:
    del argv
    cli.guarded(_main)


def _main() -> None:
    if FLAGS.list:
        print(listing(FLAGS.list, FLAGS.config))
        return
    if FLAGS.config is None or (FLAGS.workdir is None and not FLAGS.dry_run):
        raise validation.ConfigError(
            "--config and --workdir are both required (only --config with --dry_run); "
            "see --help, or --list=configs for the configs."
        )
    sharding.initialize_distributed(FLAGS.config.distributed)
    if FLAGS.dry_run:
        print(pipeline.memory_report(pipeline.memory_plan(FLAGS.config)))
        return
    cli.stop_on_interrupt("gga_jax.main")
    pipeline.run(FLAGS.config, FLAGS.workdir)


def listing(what: str, config=None) -> str:
    """The text of --list=configs, arms or keys."""
    if what == "arms":
        lines = [ARM_HELP[a] if a in ARM_HELP else a for a in validation.ARMS]
        return "\n".join([*lines, ARM_HELP["tina"]])
    if what == "keys":
        flat = pipeline.flat_config(config if config is not None else defaults.base())
        return "\n".join(f"{k} = {v!r}" for k, v in sorted(flat.items()))
    lines = []
    for name, path in cli.packaged_configs().items():
        if not name.startswith("experiments/"):
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            lines.append(f"{name}: {doc.splitlines()[0] if doc else ''}")
    lines.append("(the sweeps: python -m gga_jax.experiments --config=experiments/e1 ... e6)")
    return "\n".join(lines)


ARM_HELP = {
    "gga": "gga: pre-train the head, score all edges, GGA picks placement.num (docs/spec.md §4)",
    "top_k": "top_k: the placement.num best-scoring edges",
    "iterative_gga": "iterative_gga: GGA in placement.iterative_rounds rounds, training and "
    "re-scoring between them",
    "random": "random: placement.num random candidate edges (placement.seed)",
    "first_k": "first_k: the first placement.num parallel edges",
    "last_k": "last_k: the last placement.num parallel edges",
    "all_parallel": "all_parallel: every parallel edge (k, k + 1), the PA baseline",
    "ffn_parallel": "ffn_parallel: a parallel adapter around every MLP sub-block",
    "all_sequential": "all_sequential: a sequential adapter (k, k) at every node",
    "single": "single: one adapter on placement.edge",
    "fixed": "fixed: adapters on placement.edges",
    "linear_probe": "linear_probe: the head alone",
    "full_finetune": "full_finetune: every parameter",
    "tina": "tina:<base>[:<label>]: TINA prunes the adapters on <base>'s edges (config.tina)",
}


def run_cli() -> None:
    """The entry point (gga_jax.cli.run)."""
    cli.run(main, "(see --help, and --list=configs, --list=arms, --list=keys)")


if __name__ == "__main__":
    run_cli()

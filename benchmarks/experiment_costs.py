"""Wall time of one run of each kind a sweep runs: one process per run, against gga_jax.experiments.

    PYTHONPATH=. python benchmarks/experiment_costs.py --backbone=text --out=/tmp/costs \
        [--before_repo=/path/to/an/older/checkout]

Each kind (single edge, GGA, iterative GGA, random, all-parallel, linear probe,
full fine-tuning) is one arm trained `--steps` steps on the offline backbone
(gga_jax.defaults.offline_backbone; 2000 train / 400 val / 1000 test).
"before" (--before_repo, a checkout of an older version of the library):
`python -m gga_jax.main` there on a config file holding just these settings,
one process per run: start-up, data, weights, head pre-training, scores,
compilation, training, evaluation; --process runs the same processes on this
checkout.
"sweep": the same runs inside one process as gga_jax.experiments runs them
(data, weights, heads and scores shared; JAX's compilation cache on), for
seed 0 and then seed 1, whose programs are the cached ones. Prints a Markdown
table and writes it with the raw times to <out>/costs.json. CPU timings on a
shared machine: compare ratios within one run of this script.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
KINDS = {
    "single": {"arms": ("single",), "placement.edge": (5, 6)},
    "gga": {"arms": ("gga",), "placement.num": 6},
    "iterative_gga": {"arms": ("iterative_gga",), "placement.num": 6},
    "random": {"arms": ("random",), "placement.num": 6},
    "all_parallel": {"arms": ("all_parallel",)},
    "linear_probe": {"arms": ("linear_probe",)},
    "full_finetune": {"arms": ("full_finetune",), "train.lr": 1e-5},
}


def settings(backbone: str, steps: int) -> dict:
    """The flat config keys of every run (all of them exist in older versions too)."""
    from gga_jax import defaults, pipeline

    c = defaults.base()
    defaults.offline_backbone(c, backbone)
    c.data.train_size, c.data.val_size, c.data.test_size = 2400, 400, 1000
    c.train.steps = steps
    c.scoring.num_examples, c.scoring.micro_batch = 256, 32
    c.scoring.head_steps, c.scoring.head_lr = 25, 1e-2
    flat = pipeline.flat_config(c)
    keep = ("model.", "data.source", "data.name", "data.train_size", "data.val_size")
    keep += ("data.test_size", "data.image_size", "data.max_len", "train.", "scoring.")
    skip = ("train.head_init", "train.eval_splits", "scoring.chunk")
    return {k: v for k, v in flat.items() if k.startswith(keep) and k not in skip}


def config_file(path: pathlib.Path, values: dict) -> None:
    """A config file setting `values` on defaults.base()."""
    lines = [
        "from gga_jax import defaults",
        "",
        "",
        "def get_config(arg=None):",
        "    c = defaults.base()",
    ]
    for key, value in values.items():
        value = tuple(value) if isinstance(value, list) else value
        lines.append(f"    c.{key} = {value!r}")
    lines += ["    c.lock()", "    return c", ""]
    path.write_text("\n".join(lines))


def process_run(repo: pathlib.Path, out: pathlib.Path, name: str, values: dict) -> float:
    path = out / f"{name}_config.py"
    config_file(path, values)
    workdir = out / f"process_{name}"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    cmd = [sys.executable, "-m", "gga_jax.main", f"--config={path}", f"--workdir={workdir}"]
    start = time.perf_counter()
    with open(out / f"process_{name}.log", "w") as log:
        subprocess.run(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def sweep_runs(out: pathlib.Path, runs: dict[str, dict]) -> dict[str, list[float]]:
    """Seconds per run inside one process, seed 0 then seed 1, as the experiments runner runs."""
    import ml_collections

    from gga_jax import defaults, experiments, pipeline

    experiments.use_compilation_cache(str(out / "xla_cache"))
    cache, times = {}, {name: [] for name in runs}
    for seed in (0, 1):
        for name, values in runs.items():
            c = defaults.base()
            for key, value in values.items():
                node, *rest = key.split(".")
                target = c if not rest else c[node]
                target[rest[0] if rest else node] = (
                    tuple(value) if isinstance(value, list) else value
                )
            c.seed = seed
            c.lock()
            start = time.perf_counter()
            pipeline.run(ml_collections.ConfigDict(c), str(out / f"sweep_{name}_s{seed}"), cache)
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="text", choices=("text", "vit"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", default="/tmp/experiment_costs")
    parser.add_argument("--before_repo", default="")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--process", action="store_true", help="also one process per run, here")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = settings(args.backbone, args.steps)
    runs = {k: {**base, **KINDS[k]} for k in args.kinds.split(",")}
    results = {"backbone": args.backbone, "steps": args.steps, "kinds": {}}
    for name, values in runs.items():
        row = results["kinds"].setdefault(name, {})
        if args.process:
            row["process"] = process_run(REPO, out, name, values)
        if args.before_repo:
            before = {k: v for k, v in values.items() if not k.startswith("placement.iterative")}
            if name != "iterative_gga":  # older versions have no iterative GGA
                row["before"] = process_run(
                    pathlib.Path(args.before_repo), out, f"b_{name}", before
                )
    for name, seconds in sweep_runs(out, runs).items():
        results["kinds"][name]["sweep_seed0"], results["kinds"][name]["sweep_seed1"] = seconds
    lines = [
        f"{args.backbone}, {args.steps} steps: seconds per run",
        "",
        "| kind | before: process per run | process per run | sweep, seed 0 | sweep, seed 1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in results["kinds"].items():
        before, process = (f"{row[k]:.0f}" if k in row else "-" for k in ("before", "process"))
        lines.append(
            f"| {name} | {before} | {process} | {row['sweep_seed0']:.0f} "
            f"| {row['sweep_seed1']:.0f} |"
        )
    results["table"] = "\n".join(lines)
    (out / "costs.json").write_text(json.dumps(results, indent=1))
    print(results["table"])


if __name__ == "__main__":
    main()

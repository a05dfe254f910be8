"""Runs configs/tina.py's experiments over backbones, budgets and seeds; writes docs/tina.md.

    PYTHONPATH=. python scripts/tina_sweep.py --root /tmp/tina_sweep --cycle_steps 25

Each job is one `python -m gga_jax.main` run in its own workdir under --root;
a job whose results.json exists is skipped and an interrupted one resumes from
its checkpoints, so running the same command again finishes a killed sweep.
Progress (job, wall and CPU seconds) is appended to <root>/progress.jsonl;
--only runs the jobs whose name contains that string. The tables average the
test accuracy over the seeds that finished (mean +- sample standard deviation).
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)
BUDGETS = {"vit": (16000, 40000), "text": (30000, 80000)}


def jobs(cycle_steps: int) -> list[tuple[str, str]]:
    """(name, config argument) of every run, in the order they run: comparisons first."""
    groups = [(b, "compare", f"backbone={b}") for b in ("vit", "text")]
    groups += [
        (b, f"budget{p}", f"backbone={b},experiment=budget,budget={p}")
        for b in ("vit", "text")
        for p in BUDGETS[b]
    ]
    return [
        (f"{backbone}_{name}_s{seed}", f"{arg},seed={seed},cycle_steps={cycle_steps}")
        for backbone, name, arg in groups
        for seed in SEEDS
    ]


def run_job(root: pathlib.Path, name: str, arg: str) -> None:
    workdir = root / name
    if (workdir / "results.json").exists():
        return
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "gga_jax.main", f"--config=configs/tina.py:{arg}"]
    cmd.append(f"--workdir={workdir}")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    with open(root / f"{name}.log", "a") as log:
        result = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    record = {
        "job": name,
        "returncode": result.returncode,
        "wall_s": time.perf_counter() - start,
        "cpu_s": after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime,
    }
    with open(root / "progress.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print(record, flush=True)


def summary(root: pathlib.Path, cycle_steps: int) -> str:
    """docs/tina.md from every finished job."""
    times = {}
    if (root / "progress.jsonl").exists():
        for line in (root / "progress.jsonl").read_text().splitlines():
            r = json.loads(line)
            times.setdefault(r["job"], []).append(r)
    groups = {}
    for name, _ in jobs(cycle_steps):
        path = root / name / "results.json"
        if path.exists():
            group = name.rsplit("_s", 1)[0]
            groups.setdefault(group, []).append((name, json.loads(path.read_text())))
    lines = []
    for group, runs in groups.items():
        cpu = sum(sum(r["cpu_s"] for r in times.get(n, [])) for n, _ in runs)
        lines += [
            f"### {group} ({len(runs)} seeds, {cpu / 60:.0f} CPU-minutes)",
            "",
            "| arm | steps | final edges | trainable params | test accuracy (mean +- std) "
            "| per seed |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        arms = [row["arm"] for row in runs[0][1]["arms"]]
        for arm in arms:
            rows = [next(r for r in res["arms"] if r["arm"] == arm) for _, res in runs]
            acc = np.array([100 * r["test_accuracy"] for r in rows])
            size = np.mean([r["trainable_params"] for r in rows])
            edges = np.mean([len(r["edges"]) for r in rows])
            std = acc.std(ddof=1) if len(acc) > 1 else float("nan")
            per_seed = ", ".join(f"{a:.1f}" for a in acc)
            steps = np.mean(
                [r.get("steps", res["config"]["train"]["steps"]) for r, (_, res) in zip(rows, runs)]
            )
            lines.append(
                f"| {arm} | {steps:.0f} | {edges:.1f} | {size:,.0f} "
                f"| {acc.mean():.2f} +- {std:.2f} | {per_seed} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/tina_sweep")
    parser.add_argument("--cycle_steps", type=int, default=25)
    parser.add_argument("--only", default="")
    parser.add_argument("--summary_only", action="store_true")
    args = parser.parse_args()
    root = pathlib.Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        for name, arg in jobs(args.cycle_steps):
            if args.only in name:
                run_job(root, name, arg)
    print(summary(root, args.cycle_steps))


if __name__ == "__main__":
    main()

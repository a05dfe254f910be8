"""Run time with and without the frozen-prefix node cache (train.prefix_cache), one process.

    PYTHONPATH=. python benchmarks/node_cache.py --backbone=vit --out=/tmp/node_cache

A single adapter on (k, k + 1) leaves nodes 0..k equal to the frozen
backbone's, and a linear probe all of them: with the cache, training and
evaluation read those nodes instead of computing them (pipeline.node_cache).
Each kind runs as an experiment runs its final runs: `--seeds` seeds in one
process on train + val, evaluated on test, sharing data, backbone, heads and,
with the cache, the node values (one experiment cache per setting). The two
settings alternate kind by kind so that a change of the machine's load hits
both. The results must agree (accuracy equal, losses to float rounding); the
script says where they do not. Prints a Markdown table of seconds per run and
steps/s and writes it with the raw rows to <out>/node_cache.json. CPU timings on
a shared machine: compare ratios within one run of this script.
"""

import argparse
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def kinds(depth: int) -> dict[str, dict]:
    """Single adapters early, in the middle and late, and the linear probe."""
    n = 2 * depth + 1
    out = {
        f"single ({k}, {k + 1})": {"arms": ("single",), "edge": (k, k + 1)}
        for k in (0, depth, n - 2)
    }
    return {**out, "linear_probe": {"arms": ("linear_probe",), "edge": None}}


def run_config(backbone: str, steps: int, seed: int, kind: dict, cached: bool):
    """An E1-style final run: train + val, test evaluated, the shared pre-trained head."""
    from gga_jax import defaults

    c = defaults.base()
    defaults.offline_backbone(c, backbone)
    c.data.train_size, c.data.val_size, c.data.test_size = 2400, 400, 1000
    c.data.final = True
    c.seed, c.arms, c.train.steps = seed, kind["arms"], steps
    c.scoring.head_steps, c.scoring.head_lr = 25, 1e-2
    if kind["edge"]:
        c.placement.edge = kind["edge"]
    c.train.prefix_cache = cached
    c.lock()
    return c


def measure(args) -> list[dict]:
    from gga_jax import pipeline

    rows, shared = [], {True: {}, False: {}}
    for name, kind in kinds(6).items():  # both offline backbones have 6 blocks
        for cached in (False, True):
            for seed in range(args.seeds):
                config = run_config(args.backbone, args.steps, seed, kind, cached)
                workdir = os.path.join(
                    args.out, args.backbone, name.replace(" ", ""), str(cached), str(seed)
                )
                begin = time.perf_counter()
                arm = pipeline.run(config, workdir, shared[cached])["arms"][0]
                rows.append(
                    {
                        "kind": name,
                        "cached": cached,
                        "seed": seed,
                        "seconds": time.perf_counter() - begin,
                        "steps_per_s": arm["steps_per_s"],
                        "test_accuracy": arm["test_accuracy"],
                        "test_loss": arm["test_loss"],
                        "final_train_loss": arm["final_train_loss"],
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    """seconds per run and steps/s without and with the cache, per kind and seed."""
    lines = [
        "| kind | seed | without: s | steps/s | with: s | steps/s | time ratio | same results |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row["cached"]:
            continue
        other = next(
            r for r in rows if r["cached"] and r["kind"] == row["kind"] and r["seed"] == row["seed"]
        )
        same = other["test_accuracy"] == row["test_accuracy"] and all(
            abs(other[k] - row[k]) <= 1e-4 * abs(row[k]) for k in ("test_loss", "final_train_loss")
        )
        lines.append(
            f"| {row['kind']} | {row['seed']} | {row['seconds']:.0f} | {row['steps_per_s']:.2f} | "
            f"{other['seconds']:.0f} | {other['steps_per_s']:.2f} | "
            f"{row['seconds'] / other['seconds']:.2f} | {'yes' if same else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit", choices=("text", "vit"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default="/tmp/node_cache")
    args = parser.parse_args()
    rows = measure(args)
    text = table(rows)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"node_cache_{args.backbone}.json"), "w") as f:
        json.dump({"args": vars(args), "rows": rows, "table": text}, f, indent=1)


if __name__ == "__main__":
    main()

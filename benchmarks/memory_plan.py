"""Per-device memory plan of training and scoring, ViT-B/16 and ViT-g/14 on 1, 8 and 64 devices.

    PYTHONPATH=. python benchmarks/memory_plan.py
    PYTHONPATH=. python benchmarks/memory_plan.py --devices 16 --models g14 --micro_batch 16
    PYTHONPATH=. python benchmarks/memory_plan.py --devices 8,16 --remat none,block,dots

Each cell is what `python -m gga_jax.main --config=... --dry_run` prints for
that config and mesh: jax.eval_shape sizes of the parameters, optimizer state
and batch under the config's partition rules, and XLA's compiled memory
analysis of the sharded train step and of the edge-sharded scorer (their
scratch "temp" holds the activations kept for the backward pass and the
collectives' buffers). Nothing is allocated: every device count runs in its
own process on that many forced CPU devices, so the compiled sizes are those
of XLA's CPU backend, whose scheduler does not bound live memory the way the
TPU/GPU latency-hiding schedulers do; read them as estimates.

Models (the paper's recipes, docs/spec.md §5): ViT-B/16 as configs/vit_inat18.py with
train and scoring batch 512, data parallel; ViT-g/14 as configs/vit_g14.py
(batch 128, scoring 512 examples), fully sharded (FSDP) over every device.
Adapters: GGA's count (24 / 40) and rank (128 / 32) as parallel stand-ins.
--remat plans each model.remat mode (models.REMAT) side by side.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {  # name: (config argument, {dotted key: value} changes)
    "b16": ("configs/vit_inat18.py:policy=gga", {"train.batch_size": 512}),
    "g14": ("configs/vit_g14.py:policy=gga", {}),
}
PLAN = """
import importlib.util, json, sys
from gga_jax import pipeline
path, _, arg = sys.argv[1].partition(":")
spec = importlib.util.spec_from_file_location("config", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
config = module.get_config(arg or None)
config.unlock()
for key, value in json.loads(sys.argv[2]).items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
print(json.dumps(pipeline.memory_plan(config)))
"""


def plan(
    model: str, devices: int, micro_batch: int | None, chunk: int | None, remat: str = "none"
) -> dict:
    """pipeline.memory_plan of one model on `devices` forced CPU devices, in a subprocess."""
    config, changes = MODELS[model]
    changes = {**changes, "model.remat": remat}
    if micro_batch:
        changes["scoring.micro_batch"] = micro_batch
    if chunk:
        changes["scoring.chunk"] = chunk
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        OPENBLAS_NUM_THREADS="1",
        PYTHONPATH=ROOT,
    )
    proc = subprocess.run(
        [sys.executable, "-c", PLAN, config, json.dumps(changes)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode:
        raise RuntimeError(f"{model} on {devices} devices failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(plans: dict[str, dict]) -> str:
    """Rows: the parts of the plan; columns: model x devices; GiB per device."""
    heads = list(plans)
    lines = ["| GiB per device | " + " | ".join(heads) + " |", "| --- " * (len(heads) + 1) + "|"]
    lines.append("| mesh | " + " | ".join(str(p["mesh"]) for p in plans.values()) + " |")
    for key in ("micro_batch", "chunk"):
        values = " | ".join(str(p["scoring_settings"][key]) for p in plans.values())
        lines.append(f"| scoring {key} | {values} |")
    for section in ("train", "scoring"):
        for name in next(iter(plans.values()))[section]:
            cells = []
            for p in plans.values():
                value = p[section].get(name)
                cells.append("n/a" if value is None else f"{value / 2**30:.3f}")
            lines.append(f"| {section}: {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="1,8,64", help="Comma-separated device counts.")
    parser.add_argument("--models", default="b16,g14", help=f"Any of {sorted(MODELS)}.")
    parser.add_argument("--micro_batch", type=int, help="Scoring micro-batch (default: config's).")
    parser.add_argument("--chunk", type=int, help="Scoring chunk (default: config's).")
    parser.add_argument("--remat", default="none", help="Comma-separated model.remat modes.")
    args = parser.parse_args()
    modes = args.remat.split(",")
    plans = {}
    for model in args.models.split(","):
        for devices in (int(d) for d in args.devices.split(",")):
            for mode in modes:
                name = f"{model}, {devices} dev" + (f", remat {mode}" if len(modes) > 1 else "")
                plans[name] = plan(model, devices, args.micro_batch, args.chunk, mode)
                print(f"planned {name}", file=sys.stderr)
    print(table(plans))


if __name__ == "__main__":
    main()

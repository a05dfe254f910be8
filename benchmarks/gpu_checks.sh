#!/usr/bin/env bash
# The accelerator checks in one run (about 6-8 minutes on one H200; the device
# tool's machine, or any CUDA host with jax, flax and optax installed):
#   1. benchmarks/score_gpu.py: ViT-B/16, 625 edges on 512 examples, end to end and split
#      into forward+backward, products and srank; every srank against float64; each
#      scoring.products preset judged by its sranks and GGA's 24 picks.
#   2. benchmarks/scale.py --gpu: the same scoring breakdown through score_edges, adapter
#      training steps/s at batch 128 for PA and a 24-edge GGA placement with recurrent
#      edges (with and without the pass-1 cache), and images/s of PA, PA with
#      model.remat "block" and full fine-tuning.
# The device machine has no network: carry the one missing pure-Python package as a wheel,
# made here with `pip download --no-deps -d .wheels ml_collections==1.1.0` (.wheels/ is
# git-ignored), and run from the repository root:
#   bash benchmarks/gpu_checks.sh            (device tool: carry [".wheels"])
# Output: $OUT/score_gpu.txt, $OUT/scale_gpu.txt, $OUT/scale_gpu.json (or ./gpu_out/).
set -euo pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
if ! python3 -c "import ml_collections" 2>/dev/null; then
  python3 -m pip install -q --no-deps .wheels/*.whl
fi
export PYTHONPATH=. PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt"
python3 benchmarks/score_gpu.py --batch 512 --micro_batch 128 2>&1 | tee "$out/score_gpu.txt"
python3 benchmarks/scale.py --gpu --out "$out/scale_gpu.json" 2>&1 | tee "$out/scale_gpu.txt"

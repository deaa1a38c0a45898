#!/usr/bin/env bash
# The checks to run where a CUDA device is lent (one prepared run, well under 10 minutes on one GPU):
# the CUDA tests, then SSD's network calls at the authors' 64 px widths (Flexi-UNet, upsampled plain
# U-Net and plain U-Net, batch 64) with the sampling times they add up to at N = 100 and 1000.
#   bash benchmarks/gpu_check.sh            (results in $OUT, or benchmarks/results/ssd_time_cuda)
set -euo pipefail
OUT_DIR="${OUT:-benchmarks/results}/ssd_time_cuda"
PY="${PY:-python}"
nvidia-smi --query-gpu=name,memory.total --format=csv
"$PY" -m pytest -q tests/test_cuda.py
PYTHONPATH=src "$PY" benchmarks/flexi_time.py --device cuda --batch 64 --repeats 10 --out-dir "$OUT_DIR"

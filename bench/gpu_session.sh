#!/usr/bin/env bash
# Every GPU check of sparseae in one device call (about 6 minutes on an H200).
#
# Before: fetch the numpy wheel numba-cuda needs into the git-ignored .whl/ (see
# bench/gpu.py), then run this from the repository root on the GPU machine with .whl
# carried:  bash bench/gpu_session.sh   (logs and JSON go to $OUT when it is set)
set -u -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/numpy-2.4.6-*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 150 python3 -m bench.gpu --quick --no-variants --json "$OUT/gpu_quick.json" 2>&1 \
    | tee "$OUT/gpu.log"
timeout 330 python3 -m bench.gpu_sweep --trials 30 --epochs 5 --table-epochs 4 2>&1 \
    | tee "$OUT/gpu_sweep.log"

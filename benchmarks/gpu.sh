#!/usr/bin/env bash
# The GPU checks on one GPU: the parts of benchmarks/gpu_run.py (see its docstring and
# benchmarks/README.md), with the environment a bare device machine needs.
#
#   bash benchmarks/gpu.sh study [--toy] [--out DIR]   # gpu tests, bench, white-minimum study (≤ 9 min)
#   bash benchmarks/gpu.sh paper [--toy] [--out DIR]   # the paper recipe, 4.5 min of training, 25 test views (≤ 9 min)
#   bash benchmarks/gpu.sh white [--toy] [--out DIR]   # the white minimum, 3 seeds an arm, the original study's model (≤ 9 min)
#   bash benchmarks/gpu.sh fast [--toy] [--out DIR]    # model=ngp: bench, 5 min of training at 800 px, 25 test
#                                                      # views; the two-pass model on occupied space (≤ 9 min)
#
# Needs: PyTorch (CUDA build), Lightning, torchmetrics, TensorBoard, matplotlib, imageio,
# jaxtyping, pytest, and hydra-core, omegaconf, antlr4, the hydra launchers, submitit, beartype
# (benchmarks/gpu_wheels.sh gathers those as wheels); the Lego scene in NERF_SYNTHETIC_DIR
# (default: .device_data/nerf_synthetic when present).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${NERF_SYNTHETIC_DIR:-}" ] && [ -d .device_data/nerf_synthetic/lego ]; then
  export NERF_SYNTHETIC_DIR=$PWD/.device_data/nerf_synthetic
fi
export NERF_LAB_CACHE=${NERF_LAB_CACHE:-/tmp/nerf_lab_cache}
exec "${PYTHON:-python3}" benchmarks/gpu_run.py "$@"

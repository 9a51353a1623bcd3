#!/usr/bin/env bash
# Prepare, on a machine with internet, what a GPU machine without it needs to run
# benchmarks/gpu.sh: the pure-Python packages that its image lacks, as wheels in .whl/, and the
# Lego scene's images and cameras in .device_data/nerf_synthetic/lego (both folders are
# gitignored; together with the checkout they must stay under the device's 64 MiB).
#
#   bash benchmarks/gpu_wheels.sh            # from the repository root
#   PYTHON=.venv/bin/python LEGO=/data/nerf_synthetic/lego bash benchmarks/gpu_wheels.sh
#
# The GPU machine (Python 3.12, PyTorch with CUDA, Lightning, torchmetrics, TensorBoard,
# matplotlib, imageio, jaxtyping, joblib, cloudpickle, PyYAML, pytest already installed)
# then installs them with:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   export PYTHONPATH=$PWD/src:/tmp/site
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/work/main/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
LEGO=${LEGO:-${NERF_SYNTHETIC_DIR:-../shared/data/nerf_synthetic}/lego}
PY_VERSION=${PY_VERSION:-3.12}

# One version of each, the versions this project is tested with (pip show in .venv).
PACKAGES=(
  hydra-core==1.3.8 omegaconf==2.3.1 hydra-joblib-launcher==1.2.0
  hydra-submitit-launcher==1.2.0 submitit==1.5.4 beartype==0.23.1
)

rm -rf .whl && mkdir -p .whl
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl "${PACKAGES[@]}"
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 pins) is published as a source archive only:
# build its pure-Python wheel here.
"$PYTHON" -m pip wheel --quiet --no-deps -w .whl antlr4-python3-runtime==4.9.3

# The scene: the JSON files and the frames' PNGs only (the test split's depth and normal maps
# are not read).
rm -rf .device_data && mkdir -p .device_data/nerf_synthetic/lego
cp "$LEGO"/transforms_*.json .device_data/nerf_synthetic/lego/
for split in train val test; do
  mkdir -p ".device_data/nerf_synthetic/lego/$split"
  find "$LEGO/$split" -maxdepth 1 -name 'r_*.png' ! -name '*_depth_*' ! -name '*_normal_*' \
    -exec cp {} ".device_data/nerf_synthetic/lego/$split/" \;
done

ls -1 .whl
# What one device call carries: tracked and untracked-not-ignored files, the wheels, the scene.
"$PYTHON" - <<'PY'
import os, subprocess
def size(paths): return sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
def walk(root): return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True, text=True, check=True).stdout.split("\0")
checkout, wheels, data = size(listed), size(walk(".whl")), size(walk(".device_data"))
total = checkout + wheels + data
print(f"wheels {wheels / 2**20:.1f} MiB, Lego {data / 2**20:.1f} MiB, checkout {checkout / 2**20:.1f} MiB: "
      f"{total / 2**20:.1f} MiB of the 64 MiB a device call carries")
raise SystemExit(0 if total < 64 * 2**20 else "error: over 64 MiB")
PY

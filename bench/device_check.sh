#!/usr/bin/env bash
# Issue 9's GPU checks as one command for the device machine: the GPU tests, then the speed tables.
#
# The device image has torch, typer, rich, safetensors, scipy, matplotlib, pytest and hypothesis,
# but not flowforge's pydantic and arviz-stats and POT, nor the peers. Here, once per session
# (the wheels are git-ignored, so they travel only when carried):
#     bash bench/device_check.sh --wheels
# then, through the device tool: run(command="bash bench/device_check.sh", carry=[".whl"],
# timeout_s=600). Results land in $OUT (gpu-tests.log, speed-cuda.json, speed-cuda.log).
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--wheels" ]]; then
    grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >>.git/info/exclude
    # The versions this project's CPU environment runs with (pydantic pins its core exactly).
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
        arviz-stats==0.8.0 POT==0.9.7.post1 || exit 1
    # The peers are pure Python; nflows has no wheel on PyPI, so build all three here.
    python3 -m pip wheel -q --no-deps -w .whl zuko==1.6.0 nflows==0.14 normflows==1.7.3 || exit 1
    du -sh .whl
    exit
fi
OUT=${OUT:-/tmp/flowforge-device}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "carry .whl (bash bench/device_check.sh --wheels here first)"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu-tests.log"
timeout 300 python3 bench/speed.py --device cuda --configs 8:64:1024,64:256:4096 --compile --rounds 3 \
    --round-seconds 0.3 --sample-seconds 0.5 --json "$OUT/speed-cuda.json" 2>&1 | tee "$OUT/speed-cuda.log"

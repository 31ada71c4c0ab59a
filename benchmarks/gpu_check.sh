#!/usr/bin/env bash
# The GPU check in one command: the CUDA tests, then the synthetic IEMOCAP-scale benchmark (bf16, and float32 for
# the frame heads), with a summary last.  On a GPU machine without a package index (the project's lent machines):
#   bash benchmarks/gpu_check.sh                # soundfile, soxr, pyAudioAnalysis from .whl/ when present
#   bash benchmarks/gpu_check.sh --device cpu   # the same script on CPU, at a small scale, between GPU checks
# Wheels for the GPU machine's Python go into the ignored .whl/ folder beforehand (README, Development).
set -euo pipefail
cd "$(dirname "$0")/.."
device=cuda
if [[ "${1:-}" == "--device" ]]; then device="$2"; fi
python=${PYTHON:-python3}
out=${OUT:-/tmp/budget-gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

if ! "$python" -c "import soundfile, soxr, pyAudioAnalysis" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/budget-site .whl/*.whl
    export PYTHONPATH="/tmp/budget-site:${PYTHONPATH:-}"
fi
"$python" -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
    || export PYTHONPATH="$PWD:${PYTHONPATH:-}"  # no build backend there: run from the source tree
"$python" -c "import torch, budget; print('torch', torch.__version__, '| CUDA', torch.cuda.is_available(), '|',
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" | tee "$out/summary.txt"

if [[ "$device" == cpu ]]; then
    scale=(--scale 0.02 --steps 20 --seeds 2 --alone 1)
else
    scale=()
fi
status=0
"$python" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py 2>&1 | tee "$out/cuda-tests.txt" || status=1
"$python" benchmarks/training.py --synthetic iemocap --device "$device" "${scale[@]}" 2>&1 | tee "$out/bench-bf16.txt" || status=1
if [[ "$device" != cpu ]]; then
    "$python" benchmarks/training.py --synthetic iemocap --device "$device" --heads mlp_pool --no-bf16 \
        2>&1 | tee "$out/bench-fp32.txt" || status=1
fi
{
    echo "== cuda tests"; tail -n 3 "$out/cuda-tests.txt"
    echo "== synthetic IEMOCAP, bf16 autocast"; grep -A8 "^synthetic" "$out/bench-bf16.txt" || true
    grep "total wall" "$out/bench-bf16.txt" || true
    if [[ -f "$out/bench-fp32.txt" ]]; then
        echo "== float32"; grep -A4 "^synthetic" "$out/bench-fp32.txt" || true; grep "total wall" "$out/bench-fp32.txt" || true
    fi
} | tee -a "$out/summary.txt"
exit $status

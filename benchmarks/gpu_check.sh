#!/usr/bin/env bash
# The GPU check in one command: the CUDA tests, then the synthetic IEMOCAP-scale benchmark (bf16, and float32 for
# the frame heads), with a summary last.  On any machine with an NVIDIA GPU and torch:
#   bash benchmarks/gpu_check.sh                # soundfile, soxr, pyAudioAnalysis from .whl/ when missing
#   bash benchmarks/gpu_check.sh --device cpu   # the same script on CPU, at a small scale
# For a machine without a package index, wheels go into the ignored .whl/ folder beforehand
# (bash benchmarks/device_wheels.sh, where the index is reachable), copied beside the repository.
# Each stage has its own time limit (500 s in all, setup aside), so one slow stage cannot take the whole call and
# the summary still comes back within the call's 600 s.
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
stage() {  # stage SECONDS LOG COMMAND...: run it within its limit, its output on screen and in $out/LOG
    local seconds=$1 log=$2 rc
    shift 2
    set +e
    timeout -k 10 "$seconds" "$@" 2>&1 | tee "$out/$log"  # -k: a process deaf to SIGTERM is killed 10 s later
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc != 0)); then
        status=1
        if ((rc == 124 || rc == 137)); then echo "!! stopped after its $seconds s"; else echo "!! exit status $rc"; fi | tee -a "$out/$log"
    fi
}
stage 130 cuda-tests.txt "$python" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
stage 270 bench-bf16.txt "$python" benchmarks/training.py --synthetic iemocap --device "$device" "${scale[@]}"
if [[ "$device" != cpu ]]; then
    stage 100 bench-fp32.txt "$python" benchmarks/training.py --synthetic iemocap --device "$device" --heads mlp_pool --no-bf16
fi
{
    echo "== cuda tests"; tail -n 4 "$out/cuda-tests.txt"
    echo "== synthetic IEMOCAP, bf16 autocast"; sed -n '/^synthetic/,$p' "$out/bench-bf16.txt" || true
    if [[ -f "$out/bench-fp32.txt" ]]; then
        echo "== float32"; sed -n '/^synthetic/,$p' "$out/bench-fp32.txt" || true
    fi
} | tee -a "$out/summary.txt"
exit $status

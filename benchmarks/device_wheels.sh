#!/usr/bin/env bash
# Fill the ignored .whl/ folder with what a GPU machine's Python (3.12, no package index) lacks for
# benchmarks/gpu_check.sh: soundfile, soxr (and soundfile's cffi, pycparser) and pyAudioAnalysis.  Run where
# the index is reachable, then copy .whl/ beside the repository on the GPU machine.
#   bash benchmarks/device_wheels.sh
# pyAudioAnalysis ships only as a 41 MB source archive, nearly all of it pretrained models budget never loads
# (it uses ShortTermFeatures alone): its wheel is rebuilt without data/, with a RECORD that matches.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/built" "$work/wheels"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$work/wheels" soundfile soxr cffi pycparser
"$python" -m pip wheel -q --no-deps -w "$work/built" "pyAudioAnalysis==0.3.14"
"$python" - "$work"/built/*.whl "$work/wheels" <<'EOF'
import base64, hashlib, pathlib, sys, zipfile

source, folder = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with zipfile.ZipFile(source) as whole, zipfile.ZipFile(folder / source.name, "w", zipfile.ZIP_DEFLATED) as slim:
    record = next(name for name in whole.namelist() if name.endswith(".dist-info/RECORD"))
    rows = []
    for info in whole.infolist():
        if info.filename == record or info.filename.startswith("pyAudioAnalysis/data/"):
            continue
        data = whole.read(info.filename)
        slim.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{info.filename},sha256={digest},{len(data)}")
    slim.writestr(record, "\n".join([*rows, f"{record},,"]) + "\n")
EOF
rm -f .whl/*.whl  # only once every wheel is here: a failed download leaves the old ones
mkdir -p .whl
mv "$work"/wheels/*.whl .whl/
ls -l .whl

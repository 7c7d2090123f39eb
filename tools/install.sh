#!/usr/bin/env bash
# Installs the project and everything it needs into .venv/ (or the active virtual environment).
# Idempotent: when nothing it depends on has changed since the last successful run, it exits in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_SPEC="torch==2.13.0,!=2.13.0+cpu"   # the regular build: torchvision's ops do not load with +cpu
TORCHVISION_SPEC="torchvision==0.28.0"

if [ -n "${VIRTUAL_ENV:-}" ]; then
  VENV="$VIRTUAL_ENV"
else
  VENV="$PWD/.venv"
fi
PY="$VENV/bin/python"
STAMP="$VENV/.segzoo-install-stamp"

fail() {  # $1: step, $2: command to retry
  echo "install: step '$1' failed. Fix the error above, then retry with: $2" >&2
  exit 1
}

fingerprint() {
  cat tools/install.sh setup.py tools/detectron2_compat/*.py mask2former/modeling/pixel_decoder/csrc/*.cpp \
    segcommon/layers/csrc/*.cpp \
    | sha256sum | cut -d' ' -f1
}

if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(fingerprint)" ] \
   && "$PY" -c "import torch, torchvision, detectron2, cv2, segcommon, mask2former, sotr, transfiner, cft" 2>/dev/null; then
  echo "install: up to date ($VENV)"
  exit 0
fi

if [ ! -x "$PY" ]; then
  echo "install: [1/5] creating virtual environment $VENV"
  python3 -m venv "$VENV" || fail venv "python3 -m venv $VENV"
fi
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)

echo "install: [2/5] PyTorch and torchvision"
"${PIP[@]}" "$TORCH_SPEC" "$TORCHVISION_SPEC" || fail torch "$PY -m pip install '$TORCH_SPEC' '$TORCHVISION_SPEC'"

echo "install: [3/5] Detectron2"
"${PIP[@]}" setuptools wheel || fail detectron2 "$PY -m pip install setuptools wheel"
"$PY" tools/detectron2_compat/install_detectron2.py || fail detectron2 "$PY tools/detectron2_compat/install_detectron2.py"

echo "install: [4/5] the project and its dependencies"
"${PIP[@]}" -e ".[dev,deploy]" || fail project "$PY -m pip install -e '.[dev,deploy]'"

"$PY" -c "import torch, torchvision, detectron2, cv2, segcommon, mask2former, sotr, transfiner, cft" \
  || fail check "$PY -c 'import detectron2, mask2former, sotr, transfiner, cft'"
echo "install: [5/5] compiled CPU kernels: deformable attention, RoIAlign (optional)"
"$PY" -c "
from mask2former.modeling.pixel_decoder.ms_deform_attn_fast import load_extension
from segcommon.layers.roi_align_fast import load_roi_align_extension
ok = load_extension() is not None
print('install: deformable attention kernel ' + ('built' if ok else 'not built: the pure-PyTorch path will be used'))
ok = load_roi_align_extension() is not None
print('install: RoIAlign kernel ' + ('built' if ok else \"not built: torchvision's kernels will be used\"))
" 2>&1 | grep -v "No CUDA runtime is found" || true
fingerprint > "$STAMP"
echo "install: done ($VENV)"

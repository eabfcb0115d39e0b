#!/usr/bin/env bash
# Creates .venv/ in the repository with torch, Detectron2 v0.6 and DePOTR (editable, with its
# compiled op). Idempotent: a second run checks the stamp and only rebuilds the extension.
#
# Detectron2 is not on PyPI. We build v0.6 from the `pb1-detectron2==0.6` sdist (its Python code
# is Detectron2's tag v0.6), verified by sha256, patched: no C++ ops (the sdist lacks csrc/),
# model-zoo configs moved where setup.py looks, and a small `detectron2._C` stand-in.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
CACHE="$REPO/.cache/install"
PY="$VENV/bin/python"
D2_SDIST="pb1-detectron2-0.6.tar.gz"
D2_SHA256="5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# Pins: see README "Install" (each was needed to get Detectron2 v0.6 running on torch 2.14).
PINS=(
  "setuptools>=77.0.3,<81" "wheel" "ninja"
  "numpy==1.26.4" "Pillow==9.5.0" "opencv-python-headless==4.11.0.86"
  "pycocotools==2.0.11" "fvcore==0.1.5.post20221221" "iopath==0.1.9"
  "albumentations==2.0.8" "matplotlib" "tensorboard" "tqdm" "pytest" "scikit-image"
  # tools/export_model.py: reading the exported ONNX file and checking it with onnxruntime.
  "onnx==1.23.2" "onnxruntime==1.31.1"
)
STAMP="$VENV/.depotr-ready"

step() { echo "[install] $*"; }
fail() { echo "[install] FAILED at step: $*" >&2; exit 1; }

stamp_key() { cat "$REPO/tools/install.sh" "$REPO/tools/detectron2_c_standin.py" | sha256sum | cut -d' ' -f1; }

build_extension() {
  step "building depotr._C (incremental)"
  (cd "$REPO" && MAX_JOBS="${MAX_JOBS:-2}" "$PY" setup.py -q build_ext --inplace) >"$CACHE/build_ext.log" 2>&1 \
    || { tail -n 40 "$CACHE/build_ext.log" >&2; fail "compiling depotr._C (log: $CACHE/build_ext.log)"; }
}

mkdir -p "$CACHE"
# torch finds nvcc through /usr/local/bin on some machines and then misses libcudart: point it
# at the toolkit (matters only for CUDA builds: FORCE_CUDA=1 or a visible GPU).
if [[ -z "${CUDA_HOME:-}" && -d /usr/local/cuda ]]; then export CUDA_HOME=/usr/local/cuda; fi
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_key)" ]]; then
  build_extension
  step "environment up to date ($VENV)"
  exit 0
fi

command -v python3.11 >/dev/null || fail "python3.11 not found (DePOTR's install route is measured on CPython 3.11)"
if [[ ! -x "$PY" ]]; then
  step "creating virtual environment $VENV"
  python3.11 -m venv "$VENV" || fail "python3.11 -m venv"
fi
PIP=("$PY" -m pip install --disable-pip-version-check -q)

step "torch 2.14.1 / torchvision 0.29.1"
"${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1" || fail "pip install torch==2.14.1 torchvision==0.29.1"
step "pinned dependencies"
"${PIP[@]}" "${PINS[@]}" || fail "pip install pinned dependencies"

if ! "$PY" -c "import detectron2" 2>/dev/null; then
  step "downloading $D2_SDIST"
  rm -rf "$CACHE/d2" && mkdir -p "$CACHE/d2"
  "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation "pb1-detectron2==0.6" -d "$CACHE/d2" \
    || fail "pip download pb1-detectron2==0.6"
  echo "$D2_SHA256  $CACHE/d2/$D2_SDIST" | sha256sum -c --quiet - \
    || fail "sha256 of $D2_SDIST does not match $D2_SHA256"
  step "patching Detectron2 v0.6 source"
  tar -xzf "$CACHE/d2/$D2_SDIST" -C "$CACHE/d2"
  SRC="$CACHE/d2/pb1-detectron2-0.6"
  "$PY" - "$SRC" <<'PYEOF' || fail "patching setup.py"
import re, sys, pathlib
setup_py = pathlib.Path(sys.argv[1]) / "setup.py"
text = setup_py.read_text()
# No C++ ops (the sdist lacks csrc/); install under Detectron2's own distribution name.
for pattern, replacement in ((r"ext_modules=get_extensions\(\),", "ext_modules=[],"),
                             (r'name="pb1-detectron2",', 'name="detectron2",')):
    text, count = re.subn(pattern, replacement, text)
    if count != 1:
        sys.exit(f"{setup_py}: expected one match of {pattern!r}, found {count}")
setup_py.write_text(text)
PYEOF
  [[ -d "$SRC/detectron2/model_zoo/configs" ]] || fail "sdist has no detectron2/model_zoo/configs"
  mv "$SRC/detectron2/model_zoo/configs" "$SRC/configs"
  cp "$REPO/tools/detectron2_c_standin.py" "$SRC/detectron2/_C.py"
  step "building Detectron2 v0.6 (pure Python)"
  "${PIP[@]}" --no-build-isolation --no-deps "$SRC" || fail "pip install patched Detectron2"
  "${PIP[@]}" "yacs>=0.1.8" "tabulate" "cloudpickle" "termcolor>=1.1" "hydra-core>=1.1" "omegaconf>=2.1" \
    "black==21.4b2" "pydot" "future" "scipy" || fail "pip install Detectron2's dependencies"
fi

step "DePOTR (editable)"
(cd "$REPO" && MAX_JOBS="${MAX_JOBS:-2}" "${PIP[@]}" --no-build-isolation --use-pep517 --no-deps -e .) >"$CACHE/depotr.log" 2>&1 \
  || { tail -n 40 "$CACHE/depotr.log" >&2; fail "pip install -e . (log: $CACHE/depotr.log)"; }
build_extension
"$PY" -c "import detectron2, depotr; from detectron2 import model_zoo; model_zoo.get_config_file('COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml')" \
  || fail "import check of detectron2 + depotr"
stamp_key >"$STAMP"
step "done ($VENV)"

#!/usr/bin/env bash
# Creates a virtual environment with torch, Detectron2 and DePOTR (editable, with its compiled
# op). Idempotent: a second run checks the stamp and only rebuilds the extension.
#
# Detectron2 is not on PyPI; two routes (README "Install"):
# - default: Detectron2 v0.6, built from the `pb1-detectron2==0.6` sdist (its Python code is
#   Detectron2's tag v0.6), verified by sha256, patched: no C++ ops (the sdist lacks csrc/),
#   model-zoo configs moved where setup.py looks, a small `detectron2._C` stand-in; plus the
#   pins v0.6 needs on this stack.
# - DEPOTR_DETECTRON2=<source dir | source archive (.tar.gz/.zip) | git URL>: builds and installs
#   that Detectron2 (e.g. upstream main) with its real C++ extension `_C`, and lets pip resolve
#   Detectron2's and DePOTR's own requirements (no v0.6 pins).
# DEPOTR_VENV=<dir> puts the environment there instead of .venv/ in the repository.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(realpath -m "${DEPOTR_VENV:-$REPO/.venv}")"
D2_ROUTE="${DEPOTR_DETECTRON2:-v0.6}"
CACHE="$REPO/.cache/install"
PY="$VENV/bin/python"
LOGS="$VENV/.depotr-logs"
D2_SDIST="pb1-detectron2-0.6.tar.gz"
D2_SHA256="5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# Both routes: build tools (Detectron2 v0.6 and main import pkg_resources, gone in setuptools
# >= 81; torch needs >= 77.0.3) and the measured versions of the export check's packages.
COMMON_PINS=(
  "setuptools>=77.0.3,<81" "wheel" "ninja" "albumentations==2.0.8"
  # tools/export_model.py: reading the exported ONNX file and checking it with onnxruntime.
  "onnx==1.23.2" "onnxruntime==1.31.1"
  # Builds xtcocotools (below) against the environment's numpy.
  "cython"
)
# v0.6 route only: each was needed to run Detectron2 v0.6 on torch 2.14 (see README "Install").
V06_PINS=(
  "numpy==1.26.4" "Pillow==9.5.0" "opencv-python-headless==4.11.0.86"
  "pycocotools==2.0.11" "fvcore==0.1.5.post20221221" "iopath==0.1.9"
)
# Detectron2 v0.6's own requirements (its patched tree is installed with --no-deps).
V06_REQUIREMENTS=(
  "yacs>=0.1.8" "tabulate" "cloudpickle" "termcolor>=1.1" "hydra-core>=1.1" "omegaconf>=2.1"
  "black==21.4b2" "pydot" "future" "scipy" "matplotlib" "tensorboard" "tqdm>4.29.0"
)
STAMP="$VENV/.depotr-ready"
D2_STAMP="$VENV/.depotr-detectron2"

step() { echo "[install] $*"; }
fail() { echo "[install] FAILED at step: $*" >&2; exit 1; }

stamp_key() {
  { cat "$REPO/tools/install.sh" "$REPO/tools/detectron2_c_standin.py"; echo "$D2_ROUTE"; } | sha256sum | cut -d' ' -f1
}

# Runs "$@" with its output in $LOGS/$1.log; on failure shows the log's tail and stops.
logged() {
  local name="$1" what="$2"
  shift 2
  "$@" >"$LOGS/$name.log" 2>&1 || { tail -n 40 "$LOGS/$name.log" >&2; fail "$what (log: $LOGS/$name.log)"; }
}

build_extension() {
  step "building depotr._C (incremental)"
  (cd "$REPO" && MAX_JOBS="${MAX_JOBS:-2}" logged build_ext "compiling depotr._C" "$PY" setup.py -q build_ext --inplace)
}

# The pip requirement for DEPOTR_DETECTRON2: an absolute path for a local directory or archive,
# `git+URL` for a repository URL.
detectron2_requirement() {
  local source="$1"
  if [[ -e "$source" ]]; then
    realpath "$source"
  elif [[ "$source" == git+* ]]; then
    echo "$source"
  elif [[ "$source" =~ ^(https?|ssh|git):// ]]; then
    if [[ "$source" =~ \.(tar\.gz|tgz|zip)$ ]]; then echo "$source"; else echo "git+$source"; fi
  else
    fail "DEPOTR_DETECTRON2=$source: expected a Detectron2 source directory, a source archive (.tar.gz/.zip) or a git URL"
  fi
}

install_detectron2_v06() {
  step "downloading $D2_SDIST"
  rm -rf "$CACHE/d2" && mkdir -p "$CACHE/d2"
  "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation "pb1-detectron2==0.6" -d "$CACHE/d2" \
    || fail "pip download pb1-detectron2==0.6"
  echo "$D2_SHA256  $CACHE/d2/$D2_SDIST" | sha256sum -c --quiet - \
    || fail "sha256 of $D2_SDIST does not match $D2_SHA256"
  step "patching Detectron2 v0.6 source"
  tar -xzf "$CACHE/d2/$D2_SDIST" -C "$CACHE/d2"
  local src="$CACHE/d2/pb1-detectron2-0.6"
  "$PY" - "$src" <<'PYEOF' || fail "patching setup.py"
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
  [[ -d "$src/detectron2/model_zoo/configs" ]] || fail "sdist has no detectron2/model_zoo/configs"
  mv "$src/detectron2/model_zoo/configs" "$src/configs"
  cp "$REPO/tools/detectron2_c_standin.py" "$src/detectron2/_C.py"
  step "building Detectron2 v0.6 (pure Python)"
  "${PIP[@]}" --no-build-isolation --no-deps "$src" || fail "pip install patched Detectron2"
}

install_detectron2_from_source() {
  local requirement
  requirement="$(detectron2_requirement "$D2_ROUTE")"
  step "building Detectron2 from $requirement (with its C++ extension; minutes)"
  # --use-pep517: without it pip falls back to `setup.py develop`/`install`, which drops
  # --no-build-isolation, and Detectron2's setup.py then cannot import torch.
  MAX_JOBS="${MAX_JOBS:-2}" logged detectron2 "pip install Detectron2 from $requirement" \
    "${PIP[@]}" --no-build-isolation --use-pep517 "$requirement"
  "$PY" -c "from detectron2 import _C; _C.get_compiler_version()" \
    || fail "the Detectron2 built from $requirement has no working detectron2._C"
}

mkdir -p "$CACHE"
# torch finds nvcc through /usr/local/bin on some machines and then misses libcudart: point it
# at the toolkit (matters only for CUDA builds: FORCE_CUDA=1 or a visible GPU).
if [[ -z "${CUDA_HOME:-}" && -d /usr/local/cuda ]]; then export CUDA_HOME=/usr/local/cuda; fi
# Deleting $D2_STAMP alone is enough to rebuild Detectron2 (e.g. from an updated source).
if [[ -f "$STAMP" && -f "$D2_STAMP" && "$(cat "$STAMP")" == "$(stamp_key)" ]]; then
  build_extension
  step "environment up to date ($VENV, Detectron2: $D2_ROUTE)"
  exit 0
fi

command -v python3.11 >/dev/null || fail "python3.11 not found (DePOTR's install route is measured on CPython 3.11)"
if [[ ! -x "$PY" ]]; then
  step "creating virtual environment $VENV"
  python3.11 -m venv "$VENV" || fail "python3.11 -m venv $VENV"
fi
mkdir -p "$LOGS"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

step "torch 2.14.1 / torchvision 0.29.1"
"${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1" || fail "pip install torch==2.14.1 torchvision==0.29.1"
# One resolution for all pins, so that nothing is installed and then downgraded.
ROUTE_PINS=()
if [[ "$D2_ROUTE" == "v0.6" ]]; then ROUTE_PINS=("${V06_PINS[@]}" "${V06_REQUIREMENTS[@]}"); fi
step "build tools and pinned dependencies"
"${PIP[@]}" "${COMMON_PINS[@]}" "${ROUTE_PINS[@]}" || fail "pip install build tools and pinned dependencies"

# Re-running must not rebuild Detectron2 (for v0.6, `pip install -U` would try PyPI's broken
# build): the route that installed it is recorded next to the stamp.
if [[ -f "$D2_STAMP" && "$(cat "$D2_STAMP")" == "$D2_ROUTE" ]] && "$PY" -c "import detectron2" 2>/dev/null; then
  step "Detectron2 already installed ($D2_ROUTE)"
else
  rm -f "$D2_STAMP"
  if [[ "$D2_ROUTE" == "v0.6" ]]; then install_detectron2_v06; else install_detectron2_from_source; fi
  echo "$D2_ROUTE" >"$D2_STAMP"
fi

# With the pins again, so that resolving DePOTR's unpinned requirements cannot move them (e.g.
# the newest scikit-image needs Pillow >= 10.1, which v0.6 cannot import).
step "DePOTR (editable) and its requirements"
(cd "$REPO" && MAX_JOBS="${MAX_JOBS:-2}" logged depotr "pip install -e .[test,export,lint]" \
  "${PIP[@]}" --no-build-isolation --use-pep517 -e ".[test,export,lint]" "${COMMON_PINS[@]}" "${ROUTE_PINS[@]}")
# CrowdPose evaluation (depotr/evaluation/crowdpose.py): xtcocotools' "keypoints_crowd" mode, built
# from source against this environment's numpy: its one wheel for CPython 3.11 (1.14.3, 2023) was
# compiled for numpy 1.x and fails to import under numpy 2 (the Detectron2-main route). No pip
# cache: a wheel built for the other route's numpy would be reused and fail to import.
logged xtcocotools "pip install xtcocotools (built from source)" \
  "${PIP[@]}" --no-cache-dir --no-build-isolation --no-binary xtcocotools "xtcocotools==1.14.3" \
  "${COMMON_PINS[@]}" "${ROUTE_PINS[@]}"
build_extension
"$PY" -c "import detectron2, depotr, xtcocotools.mask; from detectron2 import model_zoo; model_zoo.get_config_file('COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml')" \
  || fail "import check of detectron2 + depotr"
stamp_key >"$STAMP"
step "done ($VENV, Detectron2: $D2_ROUTE)"

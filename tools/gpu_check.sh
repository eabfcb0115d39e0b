#!/usr/bin/env bash
# The one command for the day a GPU is available (issue 14). On a machine with a CUDA GPU, within
# 8 minutes and without network, it
#   1. builds depotr._C with its CUDA kernels (FORCE_CUDA=1 setup.py build_ext --inplace),
#   2. runs the CUDA and Triton tests of multi-scale deformable attention (and the AMP step test),
#   3. runs tools/check_msda_cuda.py (parity, gradcheck, backend choice, timing),
#   4. trains configs/depotr_hm_r50.yaml for 20 iterations with AMP on generated synthetic data,
#   5. runs benchmarks/bench_msda.py with every backend: ours (CUDA, Triton), the reference and the
#      original Deformable DETR kernel JIT-built from ../shared/baselines/deformable_detr_ops into
#      a temporary folder (float32; float16 / bfloat16 without it),
# then writes every figure, with the device name, into benchmarks/msda_gpu_notes.md in one atomic
# write (tools/gpu_check_notes.py). A step that fails or runs out of time is recorded and the next
# one runs; each step is limited so that the whole stays within the budget.
#
#   bash tools/gpu_check.sh          # PYTHON=/path/to/python to choose the interpreter
#
# Exit status: 0 all steps passed; 1 a step failed (the notes say which); 2 no CUDA GPU visible
# to PyTorch: it says so and stops before building, running or writing anything.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
BUDGET_S=480
NOTES=${GPU_CHECK_NOTES:-benchmarks/msda_gpu_notes.md}  # another file: for the script's own test

if ! device=$("$PYTHON" -c 'import sys, torch
sys.exit(1) if not torch.cuda.is_available() else print(torch.cuda.get_device_name())' 2>/dev/null); then
  echo "gpu_check: no CUDA GPU visible to PyTorch ($PYTHON); nothing was built, run or written." >&2
  exit 2
fi
echo "gpu_check on $device" >&2

export PYTHONPATH="$PWD/projects/DePOTR${PYTHONPATH:+:$PYTHONPATH}"
# No network: nothing may try to download (all weights are random, the data is generated).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
results=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$results"' EXIT
start=$SECONDS
failed=0

# step NAME LIMIT_S COMMAND...: runs COMMAND (output in $results/NAME.log) for at most LIMIT_S
# seconds and at most what is left of the budget; appends "NAME<TAB>status<TAB>seconds" to steps.tsv.
step() {
  local name=$1 limit=$2 left status rc t0
  shift 2
  left=$((BUDGET_S - (SECONDS - start)))
  if ((left < 15)); then
    printf '%s\t%s\t0\n' "$name" "skipped: the ${BUDGET_S} s budget is spent" >>"$results/steps.tsv"
    failed=1
    return
  fi
  ((limit > left)) && limit=$left
  echo "== $name (at most ${limit} s)" >&2
  t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$results/$name.log" 2>&1
  rc=$?
  status=passed
  if ((rc == 124 || rc == 137)); then status="timed out after ${limit} s"; elif ((rc != 0)); then status="failed (exit $rc)"; fi
  [[ $status == passed ]] || failed=1
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >>"$results/steps.tsv"
  echo "   $status in $((SECONDS - t0)) s" >&2
}

step build 180 env FORCE_CUDA=1 MAX_JOBS="$(nproc)" "$PYTHON" setup.py -q build_ext --inplace
step tests 120 "$PYTHON" -m pytest -q -rfE -p no:cacheprovider \
  tests/layers/test_ms_deform_attn_cuda.py tests/layers/test_ms_deform_attn_triton.py \
  tests/layers/test_ms_deform_attn_backends.py tests/modeling/test_mixed_precision.py tests/test_tracking.py
step check_msda_cuda 60 "$PYTHON" tools/check_msda_cuda.py --timing-batch 32
step train 100 "$PYTHON" train_net.py --config-file configs/depotr_hm_r50.yaml --num-gpus 1 \
  OUTPUT_DIR "$results/train" MODEL.DEVICE cuda SOLVER.AMP.ENABLED True \
  SOLVER.MAX_ITER 20 SOLVER.MAX_EPOCHS 0 SOLVER.WARMUP_EPOCHS 0.0 SOLVER.WARMUP_ITERS 5 \
  SOLVER.IMS_PER_BATCH 8 SOLVER.CHECKPOINT_PERIOD 1000 TEST.EVAL_PERIOD 0 \
  'DATASETS.TRAIN' '("synthetic_persons_train",)' 'DATASETS.TEST' '("synthetic_persons_val",)' \
  'DATASETS.PRECOMPUTED_BOXES' '()' DATASETS.SYNTHETIC.ROOT "$results/synthetic" \
  DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES 64 DATASETS.SYNTHETIC.NUM_VAL_IMAGES 8 \
  MODEL.DEPOTR.TEST_BOX_SOURCE gt DATALOADER.NUM_WORKERS 4
bench=(benchmarks/bench_msda.py --cuda-only --batch 32 128 --crop 256x192 --repeats 10 --max-seconds 4)
step bench_float32 100 "$PYTHON" "${bench[@]}" --dtype float32 --write-readme "$results/bench_float32.md"
for dtype in bfloat16 float16; do
  step "bench_$dtype" 40 "$PYTHON" "${bench[@]}" --dtype "$dtype" --backends reference compiled triton \
    --write-readme "$results/bench_$dtype.md"
done
"$PYTHON" tools/gpu_check_notes.py --results "$results" --device "$device" --notes "$NOTES" || failed=1
awk -F'\t' '{printf "  %-16s %-40s %6s s\n", $1, $2, $3}' "$results/steps.tsv" >&2
echo "gpu_check: $((SECONDS - start)) s; $([[ $failed == 0 ]] && echo 'all steps passed' || echo 'SOME STEPS FAILED'); figures in $NOTES" >&2
exit "$failed"

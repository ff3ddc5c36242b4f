#!/usr/bin/env bash
# The GPU work of the fused-kernel engine (fast-sampling issue), as one script of about 5 minutes
# for the lent GPU machine; PARTS picks the parts (default all):
#   tests:   the fused kernels' tests compiled on CUDA (tests/test_fused.py, bf16 included);
#   kernel:  the residual blocks under each launch of LAUNCHES (benchmarks/fused_kernel.py): each
#            kernel checked against the eager blocks, timed per block, as GB/s and TFLOP/s against
#            the H100's peaks; the fastest launch is used by the parts below;
#   engine:  engine speed at batch 1 and 16 (base, 6 steps, 5 s per item): the reference loop,
#            eager bf16, the folded engine (the CPU's default, never timed on CUDA), the fused
#            kernels (the kernel projects the mel, or reads cached projections), and a kernel
#            profile of the fused engine;
#   large:   the fused kernels at batches 16 / 64 / 128 (the reference's best batch is the
#            baseline of "x best ref");
#   quality: the shipped vocoder's held-out quality with and without the fused kernels;
#   upsampler: the mel upsampler as transposed convolutions (the first H100 profile: 7 % of the
#            fused engine's time) and as sub-pixel convolutions (the form it now runs in);
#   accuracy: (not in the default PARTS) where the kernel's largest bf16 block error vs float32 is,
#            with and without software pipelining (s1), and in fp16: the open question of the
#            first H100 runs (worst case 0.076 of the block output's scale, eager bf16 0.0068).
# Expects (carry them): .whl/ (the wheels the GPU image lacks: ../shared/wheels-gpu/*.whl and the
# reference diffwave wheel) and .gpu-data/heldout8/ (the speech recipe's 8 validation files).
# Everything comes back in $OUT/logs.tar.gz, with the tables in $OUT/summary.txt.
set -u -o pipefail
OUT=${OUT:-gpu-out}
# the fastest single-block launches of the first H100 runs, and grouped blocks (gHALO: dilations 1-8 of
# each cycle in one kernel), not yet timed on a GPU (benchmarks/kernel_registers.py: they spill)
LAUNCHES=${LAUNCHES:-"128x4 64x4 128x4g16 128x8g16"}
PARTS=${PARTS:-"tests upsampler kernel engine large quality"}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run of the plumbing (TRITON_INTERPRET=1, tiny sizes)
LOGS="$OUT/logs"
mkdir -p "$LOGS"
if [ -d .whl ] && [ "$DEVICE" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD:${PYTHONPATH:-}"
fi
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
SIZE=base SECONDS_PER_ITEM=5 DATA=.gpu-data/heldout8 PQ_TIMEOUT=120
KERNEL_BATCH=16 ENGINE_BATCHES="1 16" LARGE_BATCHES="16 64 128"
if [ "$DEVICE" = cpu ]; then
  export TRITON_INTERPRET=1 SIZE=tiny SECONDS_PER_ITEM=0.05 LAUNCHES="2048x4 2048x4g16" PQ_TIMEOUT=20
  KERNEL_BATCH=1 ENGINE_BATCHES="1" LARGE_BATCHES="2"
fi
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOGS/gpu.txt"
SUMMARY="$OUT/summary.txt"
part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
engine() {  # engine NAME TIMEOUT ARGS...: one engine_speed run, its table appended to the summary
  local name=$1 limit=$2; shift 2
  echo "== $name ($(date +%T))" | tee -a "$SUMMARY"
  timeout "$limit" $PY benchmarks/engine_speed.py --device "$DEVICE" --size "$SIZE" --seconds "$SECONDS_PER_ITEM" \
    "$@" --json "$LOGS/engine-$name.json" > "$LOGS/engine-$name.txt" 2>&1
  echo "exit $?" >> "$LOGS/engine-$name.txt"
  grep -v Warning "$LOGS/engine-$name.txt" | grep -E '^\||^  batch|exit|Error' | tee -a "$SUMMARY"
}
fastest_launch() {  # fastest_launch JSON: the launch of fused_kernel.py's fastest correct row (else the first
  # of LAUNCHES: on a CPU the interpreter's bf16 is wrong, so no row is correct there)
  $PY -c '
import json, sys
try:
    rows = [r for r in json.load(open(sys.argv[1]))["rows"] if "block_us" in r and r["max_rel_error"] < 0.1]
except (OSError, ValueError):
    rows = []
print(min(rows, key=lambda r: r["block_us"])["launch"] if rows else sys.argv[2])' "$1" "${LAUNCHES%% *}"
}

if part tests; then
  echo "== fused-kernel tests on $DEVICE ($(date +%T))" | tee -a "$SUMMARY"
  AUDIODIFF_TEST_DEVICE=$DEVICE timeout 150 $PY -m pytest -q -p no:warnings tests/test_fused.py \
    > "$LOGS/pytest-fused.log" 2>&1
  tail -3 "$LOGS/pytest-fused.log" | tee -a "$SUMMARY"
fi

if part upsampler; then
  echo "== mel upsampler: transposed vs sub-pixel convolutions ($(date +%T))" | tee -a "$SUMMARY"
  timeout 60 $PY benchmarks/upsampler_speed.py --device "$DEVICE" --batch 1 16 --seconds "$SECONDS_PER_ITEM" \
    --precisions fp32 bf16 --json "$LOGS/upsampler.json" 2>&1 | grep -v Warning | grep -E '^\|' | tee -a "$SUMMARY"
fi

BEST=${BEST:-${LAUNCHES%% *}}
if part kernel; then
  echo "== one residual block per launch ($(date +%T))" | tee -a "$SUMMARY"
  # shellcheck disable=SC2086  # word-split the launch list
  timeout 240 $PY benchmarks/fused_kernel.py --device "$DEVICE" --size "$SIZE" --seconds "$SECONDS_PER_ITEM" \
    --batch "$KERNEL_BATCH" --launches $LAUNCHES --modes mel --json "$LOGS/fused-kernel-mel.json" 2>&1 | grep -v Warning | tee -a "$SUMMARY"
  BEST=$(fastest_launch "$LOGS/fused-kernel-mel.json")
  echo "fastest launch: $BEST" | tee -a "$SUMMARY"
  timeout 60 $PY benchmarks/fused_kernel.py --device "$DEVICE" --size "$SIZE" --seconds "$SECONDS_PER_ITEM" \
    --batch "$KERNEL_BATCH" --launches "$BEST" --modes cached --json "$LOGS/fused-kernel-cached.json" 2>&1 | grep -v Warning \
    | grep -E '^\|' | tail -1 | tee -a "$SUMMARY"
fi

if part engine; then
  # shellcheck disable=SC2086  # word-split the batch lists
  engine batch1-16 240 --batch $ENGINE_BATCHES --repeats 3 --engines bf16 bf16-folded bf16-fused bf16-fused-cached \
    --launches "$BEST" --profile --profile-engine bf16-fused
  grep -A22 "Name" "$LOGS/engine-batch1-16.txt" | head -24 > "$LOGS/profile-fused.txt"
fi
# shellcheck disable=SC2086
part large && engine large-batches 150 --batch $LARGE_BATCHES --repeats 3 --engines bf16-fused --launches "$BEST"

if part quality; then
  echo "== held-out quality, fused vs unfused ($(date +%T))" | tee -a "$SUMMARY"
  timeout "$PQ_TIMEOUT" $PY benchmarks/precision_quality.py --model speech-22k --data "$DATA" --device "$DEVICE" \
    --precisions fp32 bf16 bf16-fused fp16 fp16-fused --launch "$BEST" --json "$LOGS/precision-fused.json" 2>&1 \
    | grep -v Warning > "$LOGS/precision-fused.txt"
  tail -8 "$LOGS/precision-fused.txt" | tee -a "$SUMMARY"
fi

if part accuracy; then
  echo "== where the fused block's largest error is ($(date +%T))" | tee -a "$SUMMARY"
  for dtype in bf16 fp16; do
    timeout 90 $PY benchmarks/fused_kernel.py --device "$DEVICE" --size "$SIZE" --seconds "$SECONDS_PER_ITEM" \
      --batch "$KERNEL_BATCH" --launches "$BEST" "${BEST}s1" --modes mel cached --dtype $dtype --repeats 2 \
      --json "$LOGS/fused-accuracy-$dtype.json" 2>&1 | grep -v Warning | grep -E '^\|' | tee -a "$SUMMARY"
    $PY -c 'import json, sys; [print(r["launch"], r["mode"], r.get("worst_at")) for r in json.load(open(sys.argv[1]))["rows"]]' \
      "$LOGS/fused-accuracy-$dtype.json" | tee -a "$SUMMARY"
  done
fi

cp "$SUMMARY" "$LOGS/"
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$LOGS"
ls -la "$OUT"
echo "done ($(date +%T))"

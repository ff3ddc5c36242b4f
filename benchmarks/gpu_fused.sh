#!/usr/bin/env bash
# The GPU work of the fused-kernel engine (fast-sampling issue), as one script of about 6 minutes
# for the lent GPU machine:
#   1. the fused kernels' tests compiled on CUDA (tests/test_fused.py, bf16 included);
#   2. engine speed at batch 16 (base, 6 steps, 5 s per item): the reference loop, eager bf16,
#      bf16 + torch.compile, and the fused kernels under every launch of LAUNCHES, plus a kernel
#      profile of the fused engine;
#   3. with the fastest launch: batch-1 latency (vs eager bf16 and CUDA graphs) and batches
#      16 / 64 / 128 (the reference's best batch is the baseline of "x best ref");
#   4. the shipped vocoder's held-out quality with and without the fused kernels (bf16, fp16);
#   5. CUDA graphs at batch 16 (compiled; not measured before).
# Expects (carry them): .whl/ (the wheels the GPU image lacks: ../shared/wheels-gpu/*.whl and the
# reference diffwave wheel) and .gpu-data/heldout8/ (the speech recipe's 8 validation files).
# Everything comes back in $OUT/logs.tar.gz, with the tables in $OUT/summary.txt.
set -u -o pipefail
OUT=${OUT:-gpu-out}
LAUNCHES=${LAUNCHES:-"64x4 128x8 32x4 64x4r168 128x8r168 256x8"}
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
if [ "$DEVICE" = cpu ]; then
  export TRITON_INTERPRET=1 SIZE=tiny SECONDS_PER_ITEM=0.05 LAUNCHES="2048x4" PQ_TIMEOUT=20
fi
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOGS/gpu.txt"
SUMMARY="$OUT/summary.txt"
engine() {  # engine NAME TIMEOUT ARGS...: one engine_speed run, its table appended to the summary
  local name=$1 limit=$2; shift 2
  echo "== $name ($(date +%T))" | tee -a "$SUMMARY"
  timeout "$limit" $PY benchmarks/engine_speed.py --device "$DEVICE" --size "$SIZE" --seconds "$SECONDS_PER_ITEM" \
    "$@" --json "$LOGS/engine-$name.json" > "$LOGS/engine-$name.txt" 2>&1
  echo "exit $?" >> "$LOGS/engine-$name.txt"
  grep -v Warning "$LOGS/engine-$name.txt" | grep -E '^\||^  batch|exit|Error' | tee -a "$SUMMARY"
}

echo "== 1. fused-kernel tests on $DEVICE ($(date +%T))" | tee -a "$SUMMARY"
AUDIODIFF_TEST_DEVICE=$DEVICE timeout 150 $PY -m pytest -q -p no:warnings tests/test_fused.py \
  > "$LOGS/pytest-fused.log" 2>&1
tail -3 "$LOGS/pytest-fused.log" | tee -a "$SUMMARY"

# shellcheck disable=SC2086  # word-split the launch list
engine batch16-launches 200 --batch 16 --repeats 3 --engines bf16 bf16-compile bf16-fused fp16-fused \
  --launches $LAUNCHES --profile --profile-engine bf16-fused
BEST=$($PY - "$LOGS/engine-batch16-launches.json" <<'EOF'
import json, sys
try:
    rows = json.load(open(sys.argv[1]))["rows"]
except (OSError, ValueError):
    rows = []
fused = [r for r in rows if r["engine"].startswith("bf16-fused") and "rtf" in r]
print(max(fused, key=lambda r: r["rtf"])["engine"].partition("@")[2] or "64x4" if fused else "64x4")
EOF
)
echo "fastest launch at batch 16: $BEST" | tee -a "$SUMMARY"
grep -A22 "Name" "$LOGS/engine-batch16-launches.txt" | head -24 > "$LOGS/profile-fused.txt"

engine batch1-latency 120 --batch 1 --repeats 5 --engines bf16 bf16-graphs bf16-fused --launches "$BEST"
engine large-batches 150 --batch 16 64 128 --repeats 3 --engines bf16-fused --launches "$BEST"

echo "== 4. held-out quality, fused vs unfused ($(date +%T))" | tee -a "$SUMMARY"
timeout "$PQ_TIMEOUT" $PY benchmarks/precision_quality.py --model speech-22k --data "$DATA" --device "$DEVICE" \
  --precisions fp32 bf16 bf16-fused fp16 fp16-fused --launch "$BEST" --json "$LOGS/precision-fused.json" 2>&1 \
  | grep -v Warning > "$LOGS/precision-fused.txt"
tail -8 "$LOGS/precision-fused.txt" | tee -a "$SUMMARY"

engine batch16-graphs 120 --batch 16 --repeats 3 --engines bf16-graphs --skip-reference

cp "$SUMMARY" "$LOGS/"
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$LOGS"
ls -la "$OUT"
echo "done ($(date +%T))"

#!/usr/bin/env bash
# The GPU checks of the end-to-end vocoder issue, as one script for the lent GPU machine:
#   1. the test suite with AUDIODIFF_TEST_DEVICE=cuda,
#   2. vocoding real-time factor, ours vs the reference diffwave package on the same weights and
#      mel: full grid (tiny/base/large, 6 and 50 steps, batch 1 and 16, 5 s per item), fp32 and
#      bf16, one JSON per precision and size,
#   3. training throughput (one optimiser step, batch 16 x 15872 samples), ours vs the reference,
#      base and large, fp32 and bf16,
#   4. diffwave-base-22k trained for a few hundred steps in bf16-mixed on the Czech speech.
# Expects: .whl/ (the wheels the GPU image lacks) and .gpu-data/fillets-cs-22k/ beside it.
# Writes logs and JSON under $OUT (default gpu-out/). The whole script takes longer than one
# device call allows; run parts of it with the SKIP_* switches and shrink the grid with the
# VOCODE_* / TRAIN_SPEED_* variables (a guess from the H200 base numbers in README.md, not yet
# measured: the vocoding grid takes 5-10 min per precision, mostly large at batch 16 and 50 steps).
set -u -o pipefail
OUT=${OUT:-gpu-out}
STEPS=${STEPS:-600}          # training steps
VAL_EVERY=${VAL_EVERY:-300}  # validation interval (steps)
SKIP_BENCH=${SKIP_BENCH:-0}  # 1: skip both speed benchmarks (sections 2 and 3)
SKIP_TESTS=${SKIP_TESTS:-0}  # 1: skip section 1
SKIP_VOCODE=${SKIP_VOCODE:-$SKIP_BENCH}            # 1: skip section 2
SKIP_TRAIN_SPEED=${SKIP_TRAIN_SPEED:-$SKIP_BENCH}  # 1: skip section 3
SKIP_TRAIN=${SKIP_TRAIN:-0}  # 1: skip section 4
PRECISIONS=${PRECISIONS:-"fp32 bf16"}
VOCODE_SIZES=${VOCODE_SIZES:-"tiny base large"}
VOCODE_STEPS=${VOCODE_STEPS:-"6 50"}
VOCODE_BATCH=${VOCODE_BATCH:-"1 16"}
VOCODE_SECONDS=${VOCODE_SECONDS:-5}
VOCODE_REPEATS=${VOCODE_REPEATS:-3}
VOCODE_TIMEOUT=${VOCODE_TIMEOUT:-600}  # seconds per (precision, size) run
TRAIN_SPEED_SIZES=${TRAIN_SPEED_SIZES:-"base large"}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

echo "== 1. tests on CUDA"
[ "$SKIP_TESTS" = 1 ] || AUDIODIFF_TEST_DEVICE=cuda timeout 300 python3 -m pytest -q -p no:warnings tests 2>&1 \
  | tee "$OUT/pytest-cuda.log" | tail -4

echo "== 2. vocoding speed, ours vs reference"
[ "$SKIP_VOCODE" = 1 ] || for precision in $PRECISIONS; do
  for size in $VOCODE_SIZES; do
    # shellcheck disable=SC2086  # word-split the lists
    timeout "$VOCODE_TIMEOUT" python3 benchmarks/vocode_speed.py --device cuda --precision "$precision" \
      --sizes "$size" --steps $VOCODE_STEPS --batch $VOCODE_BATCH --seconds "$VOCODE_SECONDS" \
      --repeats "$VOCODE_REPEATS" --json "$OUT/vocode-cuda-$precision-$size.json" 2>&1 \
      | grep -v Warning | tee "$OUT/vocode-cuda-$precision-$size.log"
  done
done

echo "== 3. training throughput, ours vs reference"
[ "$SKIP_TRAIN_SPEED" = 1 ] || for precision in $PRECISIONS; do
  for size in $TRAIN_SPEED_SIZES; do
    timeout 300 python3 benchmarks/train_throughput.py --device cuda --precision "$precision" --size "$size" \
      --batch 16 --steps 20 --json "$OUT/train-speed-cuda-$precision-$size.json" 2>&1 \
      | grep -v Warning | tee "$OUT/train-speed-cuda-$precision-$size.log"
  done
done

echo "== 4. training diffwave-base-22k, $STEPS steps, bf16-mixed"
[ "$SKIP_TRAIN" = 1 ] && exit 0
timeout 330 python3 -m audiodiff.cli train --config configs/diffwave-base-22k.yaml \
  --data.root .gpu-data/fillets-cs-22k --data.cache_dir "$OUT/cache" --data.num_workers 10 \
  --trainer.max_steps "$STEPS" --trainer.val_check_interval "$VAL_EVERY" --trainer.log_every_n_steps 25 \
  --trainer.enable_progress_bar false --trainer.logger.init_args.save_dir "$OUT/runs" 2>&1 \
  | grep -v Warning | tail -25 | tee "$OUT/train.log"
python3 benchmarks/tb_summary.py "$OUT/runs" --json "$OUT/train-summary.json"
last=$(ls "$OUT"/runs/*/version_*/checkpoints/last.ckpt 2>/dev/null | head -1)
[ -n "$last" ] && python3 -m audiodiff.cli export "$last" -o "$OUT/diffwave-base-22k-gpu.safetensors"
rm -rf "$OUT/runs"/*/version_*/checkpoints   # the export is what comes back (checkpoints are large)

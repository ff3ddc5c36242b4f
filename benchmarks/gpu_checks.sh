#!/usr/bin/env bash
# The GPU checks of the end-to-end vocoder issue, as one script for the lent GPU machine:
#   1. the test suite with AUDIODIFF_TEST_DEVICE=cuda,
#   2. vocoding real-time factor for base, 6 steps, batch 1 and 16 (fp32 and bf16),
#   3. diffwave-base-22k trained for a few hundred steps in bf16-mixed on the Czech speech.
# Expects: .whl/ (the wheels the GPU image lacks) and .gpu-data/fillets-cs-22k/ beside it.
# Writes logs and JSON under $OUT (default gpu-out/).
set -u -o pipefail
OUT=${OUT:-gpu-out}
STEPS=${STEPS:-600}          # training steps
VAL_EVERY=${VAL_EVERY:-300}  # validation interval (steps)
SKIP_BENCH=${SKIP_BENCH:-0}  # 1: skip the vocoding-speed tables
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

echo "== 1. tests on CUDA"
AUDIODIFF_TEST_DEVICE=cuda timeout 300 python3 -m pytest -q -p no:warnings tests 2>&1 | tee "$OUT/pytest-cuda.log" | tail -4

echo "== 2. vocoding speed"
[ "$SKIP_BENCH" = 1 ] || for precision in fp32 bf16; do
  timeout 150 python3 benchmarks/vocode_speed.py --device cuda --precision $precision --sizes base \
    --batch 1 16 --seconds 5 --repeats 5 --json "$OUT/vocode-cuda-$precision.json"
done

echo "== 3. training diffwave-base-22k, $STEPS steps, bf16-mixed"
timeout 330 python3 -m audiodiff.cli train --config configs/diffwave-base-22k.yaml \
  --data.root .gpu-data/fillets-cs-22k --data.cache_dir "$OUT/cache" --data.num_workers 10 \
  --trainer.max_steps "$STEPS" --trainer.val_check_interval "$VAL_EVERY" --trainer.log_every_n_steps 25 \
  --trainer.enable_progress_bar false --trainer.logger.init_args.save_dir "$OUT/runs" 2>&1 \
  | grep -v Warning | tail -25 | tee "$OUT/train.log"
python3 benchmarks/tb_summary.py "$OUT/runs" --json "$OUT/train-summary.json"
last=$(ls "$OUT"/runs/*/version_*/checkpoints/last.ckpt 2>/dev/null | head -1)
[ -n "$last" ] && python3 -m audiodiff.cli export "$last" -o "$OUT/diffwave-base-22k-gpu.safetensors"
rm -rf "$OUT/runs"/*/version_*/checkpoints   # the export is what comes back (checkpoints are large)

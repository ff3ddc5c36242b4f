#!/usr/bin/env bash
# The GPU check of the sound-effects issue, as one script for the lent GPU machine:
#   1. the generation tests on CUDA,
#   2. configs/sfx-22k.yaml trained for MINUTES minutes (bf16-mixed) on the shared sound effects,
#   3. per class: N generated clips, a contact sheet, and spectral statistics against real clips.
# Expects: .whl/ (the wheels the GPU image lacks: ../shared/wheels-gpu/*.whl) and .gpu-data/sfx/
# (a copy of shared/data/sfx). Carry both. Writes logs, sheets, JSON and the model under $OUT.
set -u -o pipefail
OUT=${OUT:-gpu-out}
MINUTES=${MINUTES:-8}     # training time
N=${N:-8}                 # generated clips per class
GUIDANCE=${GUIDANCE:-3}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

echo "== 1. generation tests on CUDA"
AUDIODIFF_TEST_DEVICE=cuda timeout 240 python3 -m pytest -q -p no:warnings tests/test_generate.py 2>&1 \
  | tee "$OUT/pytest-cuda.log" | tail -4

echo "== 2. training sfx-22k for $MINUTES minutes, bf16-mixed"
timeout $((MINUTES * 60 + 120)) python3 -m audiodiff.cli train --config configs/sfx-22k.yaml \
  --data.root .gpu-data/sfx --data.cache_dir "$OUT/cache" --data.num_workers 12 \
  --trainer.max_time "00:00:$(printf %02d "$MINUTES"):00" --trainer.val_check_interval 500 \
  --trainer.log_every_n_steps 25 --trainer.enable_progress_bar false \
  --trainer.logger.init_args.save_dir "$OUT/runs" 2>&1 | grep -v Warning | tail -30 | tee "$OUT/train.log"
python3 benchmarks/tb_summary.py "$OUT/runs" --json "$OUT/train-summary.json"
last=$(ls "$OUT"/runs/*/version_*/checkpoints/last.ckpt 2>/dev/null | head -1)
[ -n "$last" ] || { echo "no checkpoint"; exit 1; }
python3 -m audiodiff.cli export "$last" -o "$OUT/sfx-22k-gpu.safetensors"
rm -rf "$OUT"/runs/*/version_*/checkpoints   # the export is what comes back

echo "== 3. per-class clips, contact sheets and spectral statistics"
for w in 1 "$GUIDANCE"; do
  timeout 240 python3 benchmarks/sfx_class_stats.py --model "$OUT/sfx-22k-gpu.safetensors" --data .gpu-data/sfx \
    --labels parent --n "$N" --seconds 1.5 --guidance "$w" --device cuda --sampler ddpm --steps 50 \
    --out "$OUT/generated-w$w" --json "$OUT/sfx-stats-w$w.json" | tee "$OUT/sfx-stats-w$w.txt"
done

#!/usr/bin/env bash
# The GPU work of the shipped-models and fast-sampling issues, as one script (about 9 minutes) for
# the lent GPU machine:
#   1. engine speed: the reference diffwave loop vs our engines (fp32, bf16, fp16, torch.compile,
#      CUDA graphs), base model, 6 steps, 5 s per item: batch 1 (latency), 16 and 64 (throughput),
#      plus a kernel profile (ENGINE_PARTS; "" skips it);
#   2. the speech vocoder (configs/diffwave-base-22k.yaml) and the sound-effects model
#      (configs/sfx-22k.yaml), each continuing from the shipped weights (--init-from INIT /
#      SFX_INIT, so the step counts continue), trained side by side for MINUTES minutes each,
#      bf16-mixed (TRAIN picks which); the CUDA tests of the engine run beside them;
#   3. exports, training summaries, and the vocoder's held-out quality in fp32 / bf16 / fp16.
# Expects (carry them): .whl/ (the wheels the GPU image lacks: ../shared/wheels-gpu/*.whl),
# .gpu-data/fillets-cs-22k/ (the Czech speech), .gpu-data/sfx/ (the sound effects, FLAC, 22.05 kHz
# mono) and .gpu-data/heldout8/ (the speech recipe's 8 validation files). At most 8 files come
# back from $OUT: the models, and everything else packed into logs.tar.gz.
set -u -o pipefail
OUT=${OUT:-gpu-out}
MINUTES=${MINUTES:-4}         # training time of each model (they train at the same time)
TRAIN=${TRAIN:-"speech sfx"}  # which models to train
SFX_INIT=${SFX_INIT-sfx-22k}  # start the sfx model from these weights ("" : from scratch)
INIT=${INIT:-speech-22k}        # the shipped vocoder (audiodiff/models/speech-22k.safetensors)
ENGINE_TIMEOUT=${ENGINE_TIMEOUT:-90}  # seconds per engine-benchmark part
DEVICE=${DEVICE:-cuda}        # cpu: a dry run of the script's plumbing (use MINUTES=0.2)
mkdir -p "$OUT/logs"
LOGS="$OUT/logs"
if [ -d .whl ] && [ "$DEVICE" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD:${PYTHONPATH:-}"
fi
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOGS/gpu.txt"
max_time=$($PY -c "s=round($MINUTES*60); print(f'00:00:{s//60:02d}:{s%60:02d}')")

echo "== 1. engine speed ($(date +%T))"
# ENGINE_PARTS: "batch,repeats,engines[,extra flag]" per part, each with its own JSON and timeout ("" skips)
ENGINE_PARTS=${ENGINE_PARTS-"1,5,fp32-seeded fp32 bf16 fp16 bf16-graphs 16,3,fp32-seeded fp32 bf16 fp16 bf16-compile,--profile 64,3,bf16,--skip-reference"}
[ -n "$ENGINE_PARTS" ] && echo "$ENGINE_PARTS" | sed 's/ \([0-9][0-9]*,\)/\n\1/g' | while IFS=, read -r batch repeats engines extra; do
  # shellcheck disable=SC2086  # word-split the engine list and the extra flag
  timeout "$ENGINE_TIMEOUT" $PY benchmarks/engine_speed.py --device "$DEVICE" --batch "$batch" --repeats "$repeats" \
    --engines $engines $extra --json "$LOGS/engine-batch$batch.json" 2>&1 \
    | grep -v Warning > "$LOGS/engine-batch$batch.txt"; tail -12 "$LOGS/engine-batch$batch.txt"
done

echo "== 2. training both models for $MINUTES min ($(date +%T))"
train() {  # train NAME ARGS...: one recipe run, its log in $LOGS/train-NAME.log
  local name=$1; shift
  timeout $(( ${MINUTES%.*} * 60 + 200 )) $PY -m audiodiff.cli train "$@" --trainer.max_time "$max_time" \
    --trainer.enable_progress_bar false --trainer.log_every_n_steps 50 --trainer.val_check_interval 1000 \
    --data.num_workers 6 --data.cache_dir "$OUT/cache-$name" --trainer.logger.init_args.save_dir "$OUT/runs-$name" \
    > "$LOGS/train-$name.log" 2>&1
  echo "train $name exit $?" | tee -a "$LOGS/train-$name.log"
}
case " $TRAIN " in *" speech "*)
  train speech --config configs/diffwave-base-22k.yaml --init-from "$INIT" --data.root .gpu-data/fillets-cs-22k & ;; esac
case " $TRAIN " in *" sfx "*)
  train sfx --config configs/sfx-22k.yaml ${SFX_INIT:+--init-from "$SFX_INIT"} --data.root .gpu-data/sfx & ;; esac
if [ "$DEVICE" = cuda ]; then
  AUDIODIFF_TEST_DEVICE=cuda timeout 150 $PY -m pytest -q -p no:warnings tests/test_engine.py \
    > "$LOGS/pytest-cuda-engine.log" 2>&1; tail -3 "$LOGS/pytest-cuda-engine.log"
fi
wait

echo "== 3. exports and held-out quality ($(date +%T))"
for name in $TRAIN; do
  $PY benchmarks/tb_summary.py "$OUT/runs-$name" --json "$LOGS/train-summary-$name.json" | tail -3
  for kind in last best; do
    ckpt=$(ls "$OUT"/runs-"$name"/*/version_*/checkpoints/"$kind"*.ckpt 2>/dev/null | tail -1)
    [ -n "$ckpt" ] && $PY -m audiodiff.cli export "$ckpt" -o "$OUT/$name-22k-$kind.safetensors"
  done
done
[ -f "$OUT/speech-22k-last.safetensors" ] && timeout 90 $PY benchmarks/precision_quality.py \
  --model "$OUT/speech-22k-last.safetensors" --data .gpu-data/heldout8 --device "$DEVICE" \
  --json "$LOGS/precision-$DEVICE.json" 2>&1 | grep -v Warning | tee "$LOGS/precision-$DEVICE.txt" | tail -8
rm -rf "$OUT"/runs-*/*/version_*/checkpoints "$OUT"/cache-*  # the exports are what comes back
mv "$OUT"/runs-* "$LOGS"/ 2>/dev/null
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$LOGS"
ls -la "$OUT"
echo "done ($(date +%T))"

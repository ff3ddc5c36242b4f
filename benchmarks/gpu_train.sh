#!/usr/bin/env bash
# The training relay: every GPU minute a task is lent continues the shipped speech vocoder, in one
# 10-minute device call (issue 19, point 4).
#   1. continues speech-22k (--init-from) with configs/diffwave-base-22k.yaml on the Czech speech for
#      MINUTES minutes (default 7: the rest of the call's 10 minutes is start-up, export and scoring);
#   2. exports the last checkpoint (the candidate) and the best-by-validation one as float16
#      safetensors (`audiodiff export --half`, as the shipped 5.3 MB file) and copies the shipped
#      file's stored schedules (searched-3/4/5) into them (a checkpoint carries none);
#   3. scores the shipped model and the candidate on the 8 held-out files (`audiodiff eval`, fast
#      6-step sampler, seed 0, as the model card) and lands the candidate -- writes it to
#      $OUT/audiodiff/models/speech-22k.safetensors -- only when benchmarks/compare_heldout.py says
#      it improved (log-mel L1 lower, PESQ and V/UV F1 not worse; see that file);
#   4. checks whether the stored schedules still hold on the new weights
#      (benchmarks/heldout_schedules.py check) and says so;
#   5. writes the model card's training-log row ($OUT/training-log-row.md) and the logs.
#
# Device run (from the repository root; 600 s is the most one call may run):
#   run(command="bash benchmarks/gpu_train.sh", carry=[".whl", ".gpu-data"], timeout_s=600)
# It prints its stages with the elapsed seconds; what comes back (at most 8 files):
#   audiodiff/models/speech-22k.safetensors   only when the candidate improved: copy it over the repo's
#   speech-22k-candidate.safetensors          the candidate when it did not land (to look at, not to ship)
#   speech-22k-best.safetensors               the best-by-validation export, when it is not the last
#   training-log-row.md                       the row for README's "Training log" table
#   heldout-shipped.json, heldout-candidate.json, gpu-train.log, logs.tar.gz
#
# Prepare once, in the repository root (both folders are in .gitignore; about 33 MB travel):
#   mkdir -p .whl .gpu-data/heldout8 && cp ../shared/wheels-gpu/*.whl .whl/
#   python3.12 -m pip wheel --no-deps pesq==0.0.4 -w .whl/   # PESQ has no wheel; without it nothing lands
#   cp -r ../shared/data/speech/fillets-cs-22k .gpu-data/
#   for f in atlantis_sp-m-nechat cabin1_k1-v-proc chest_tru-m-zrada corridor_ch-v-neboj1 gods_lod-m-micek \
#     hardware_pz-m-nepasuje kitchen_kuch-m-hrnec0 map_map-m-pravidla; do cp .gpu-data/fillets-cs-22k/*/$f.ogg .gpu-data/heldout8/; done
# (the held-out 8 are the recipe's validation split, which training leaves out).
#
# Dry run of the plumbing on a CPU (tiny data, a couple of steps; lands nothing in the repository):
#   DEVICE=cpu MINUTES=0.2 DATA=tiny-data/ HELDOUT=tiny-heldout/ OUT=/tmp/gpu-train-out TRAIN_SLACK=600 \
#     TRAIN_ARGS="--data.batch_size 2 --data.val_files 1 --data.val_seconds 0.3 --model.val_audio_clips 1
#       --trainer.val_check_interval 1 --trainer.num_sanity_val_steps 0" bash benchmarks/gpu_train.sh
set -u -o pipefail
OUT=${OUT:-gpu-out}
MINUTES=${MINUTES:-7}                        # training time (Lightning max_time)
DEVICE=${DEVICE:-cuda}                       # cpu: a dry run of the plumbing
INIT=${INIT:-speech-22k}                     # the model to continue and to beat
CONFIG=${CONFIG:-configs/diffwave-base-22k.yaml}
DATA=${DATA:-.gpu-data/fillets-cs-22k}       # training data (the recipe holds out its 8 validation files)
HELDOUT=${HELDOUT:-.gpu-data/heldout8}       # the model card's 8 held-out files
TRAIN_ARGS=${TRAIN_ARGS:-}                   # extra `audiodiff train` arguments (word-split)
DEADLINE=${DEADLINE:-585}                    # seconds: optional stages are skipped past this
TRAIN_SLACK=${TRAIN_SLACK:-150}              # seconds the train command may run beyond MINUTES (start-up,
                                             # validation); past it, it is killed and the step-1000 last.ckpt is used
PY=${PY:-python3}
if [ "$DEVICE" = cuda ]; then WORKERS=${WORKERS:-10}; else WORKERS=${WORKERS:-1}; fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-train.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOGS="$WORK/logs"
mkdir -p "$OUT" "$LOGS"
exec > >(tee -a "$OUT/gpu-train.log") 2>&1
stage() { echo "== [$SECONDS s] $*"; }
export PYTHONUNBUFFERED=1

stage "0. set-up (device $DEVICE, $MINUTES min of training, init $INIT)"
if [ -d .whl ] && [ "$DEVICE" = cuda ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
AD="$PY -m audiodiff.cli"
if [ "$DEVICE" = cuda ]; then
  GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
else
  GPU="CPU dry run"
fi
echo "GPU: $GPU"
for path in "$CONFIG" "$DATA" "$HELDOUT"; do [ -e "$path" ] || { echo "missing: $path (see the header)"; exit 1; }; done
$PY -c "import pesq" 2>/dev/null || echo "WARNING: the pesq package is missing: PESQ cannot be scored, so the candidate cannot land (see the header)"
$AD info "$INIT" > "$LOGS/info-init.txt" || { cat "$LOGS/info-init.txt"; exit 1; }
head -5 "$LOGS/info-init.txt"
steps_of() { $PY -c "import json,sys; print(json.load(sys.stdin)['training_step'])" < <($AD info --json "$1"); }
STEPS_BEFORE=$(steps_of "$INIT")

stage "1. training $MINUTES min from $INIT ($STEPS_BEFORE steps) on $DATA"
max_time=$($PY -c "s=max(1,round($MINUTES*60)); print(f'00:{s//3600:02d}:{s%3600//60:02d}:{s%60:02d}')")
accelerator=(); [ "$DEVICE" = cpu ] && accelerator=(--trainer.accelerator cpu --trainer.devices 1)
# shellcheck disable=SC2086  # TRAIN_ARGS is a list of arguments
timeout $(( $(printf '%.0f' "$($PY -c "print($MINUTES*60)")") + TRAIN_SLACK )) \
  $AD train --config "$CONFIG" --init-from "$INIT" --data.root "$DATA" "${accelerator[@]}" \
  --trainer.max_time "$max_time" --trainer.enable_progress_bar false --trainer.log_every_n_steps 50 \
  --data.num_workers "$WORKERS" --data.cache_dir "$WORK/cache" --trainer.logger.init_args.save_dir "$WORK/runs" \
  $TRAIN_ARGS > "$LOGS/train.log" 2>&1
echo "train exit $?"; grep -v -i warn "$LOGS/train.log" | tail -4
$PY benchmarks/tb_summary.py "$WORK/runs" --json "$LOGS/train-summary.json" 2>/dev/null | tail -4

stage "2. export (float16) and the stored schedules"
last=$(ls "$WORK"/runs/*/version_*/checkpoints/last.ckpt 2>/dev/null | tail -1)
best=$(ls "$WORK"/runs/*/version_*/checkpoints/best*.ckpt 2>/dev/null | tail -1)
[ -n "$last" ] || { echo "no last.ckpt: training failed (tail of its log above; all of it in logs.tar.gz)"; tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs; exit 1; }
CAND="$WORK/speech-22k-candidate.safetensors"
$AD export "$last" --half -o "$CAND" || exit 1
$PY benchmarks/heldout_schedules.py carry "$CAND" --from "$INIT" || exit 1
STEPS_AFTER=$(steps_of "$CAND")
if [ -n "$best" ]; then
  $AD export "$best" --half -o "$WORK/speech-22k-best.safetensors" && \
    $PY benchmarks/heldout_schedules.py carry "$WORK/speech-22k-best.safetensors" --from "$INIT"
  [ "$(steps_of "$WORK/speech-22k-best.safetensors")" != "$STEPS_AFTER" ] && cp "$WORK/speech-22k-best.safetensors" "$OUT/"
fi
$AD info "$CAND" | grep -E "trained|^schedule" | tee "$LOGS/info-candidate.txt"

stage "3. held-out scores: shipped vs candidate ($(ls "$HELDOUT" | wc -l) files, fast sampler, seed 0, vocoded on $DEVICE)"
heldout() {  # heldout NAME MODEL [ARGS]: audiodiff eval into $OUT/heldout-NAME.json
  local name=$1 model=$2; shift 2
  $AD eval --model "$model" --data "$HELDOUT" --device "$DEVICE" --sampler fast --seed 0 -q \
    --out "$WORK/eval-$name" --json "$OUT/heldout-$name.json" "$@" > "$LOGS/eval-$name.txt" 2>&1
  echo "eval $name exit $?" >> "$LOGS/eval-$name.txt"
}
# wait for these two by pid: a bare `wait` also waits for the `tee` of the log (a process substitution) forever
heldout shipped "$INIT" & p1=$!
heldout candidate "$CAND" --no-griffin-lim & p2=$!
wait $p1 $p2
tail -q -n 1 "$LOGS/eval-shipped.txt" "$LOGS/eval-candidate.txt"
grep -A12 "^metric " "$LOGS/eval-shipped.txt"  # the shipped model next to Griffin-Lim
$PY benchmarks/compare_heldout.py "$OUT/heldout-shipped.json" "$OUT/heldout-candidate.json" \
  --row "$OUT/training-log-row.md" --gpu "$GPU" --minutes "$MINUTES" --device "$DEVICE" \
  --steps-before "$STEPS_BEFORE" --steps-after "$STEPS_AFTER"
verdict=$?
if [ $verdict -eq 0 ]; then
  mkdir -p "$OUT/audiodiff/models" && cp "$CAND" "$OUT/audiodiff/models/speech-22k.safetensors"
  echo "LANDED: \$OUT/audiodiff/models/speech-22k.safetensors ($STEPS_AFTER steps) replaces the shipped model"
else
  cp "$CAND" "$OUT/speech-22k-candidate.safetensors"
  [ $verdict -eq 2 ] && echo "(not comparable, reasons above; if pesq was missing, score both again where it is, e.g. on the CPU:" \
    "'audiodiff eval --model speech-22k-candidate.safetensors --data heldout8/ --device cpu --json ...')"
  echo "NOT LANDED (compare_heldout exit $verdict): the shipped model stays; the candidate comes back as speech-22k-candidate.safetensors"
fi

stage "4. do the stored schedules still hold on the candidate?"
if [ $SECONDS -lt $(( DEADLINE - 60 )) ]; then
  timeout $(( DEADLINE - SECONDS )) $PY benchmarks/heldout_schedules.py check "$INIT" "$CAND" --data "$HELDOUT" \
    --device "$DEVICE" --json "$LOGS/schedules.json" 2>&1 | grep -v -i warn
else
  echo "skipped (past $((DEADLINE - 60)) s): run 'python benchmarks/heldout_schedules.py check speech-22k CANDIDATE --data heldout8/' on the CPU"
fi

stage "5. training-log row and logs"
cat "$OUT/training-log-row.md" 2>/dev/null
rm -rf "$WORK"/runs/*/version_*/checkpoints "$WORK/cache"
mv "$WORK/runs" "$LOGS/" 2>/dev/null
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
ls -la "$OUT" "$OUT/audiodiff/models" 2>/dev/null
stage "done"

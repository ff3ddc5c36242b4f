#!/usr/bin/env bash
# Training throughput on the lent GPU machine (issue 19, point 2), as one device call (about
# 6-8 minutes): whole Lightning training steps, data loading included, today's recipe
# (configs/diffwave-base-22k.yaml: disk crops, 4 loader workers, batch 16, bf16-mixed) against
# the resident data path (data.resident: true) at batch 16/64/128, with cuDNN autotuning
# (trainer.benchmark) and torch.compile (model.compile), side by side in one run; today's recipe
# runs again last, to show the machine did not drift. See benchmarks/train_throughput.py --pipeline.
# Expects (carry them): .whl/ (the wheels the GPU image lacks: ../shared/wheels-gpu/*.whl) and
# .gpu-data/fillets-cs-22k/ (the Czech speech, 1238 Ogg files). VARIANTS overrides the list.
set -u -o pipefail
OUT=${OUT:-gpu-out}
DATA=${DATA:-.gpu-data/fillets-cs-22k}
VARIANT_TIMEOUT=${VARIANT_TIMEOUT:-150}  # seconds per variant (a compiled one compiles for ~1-2 min)
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD:${PYTHONPATH:-}"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# shellcheck disable=SC2086  # word-split the variant list
timeout 570 python3 benchmarks/train_throughput.py --pipeline --device cuda --data "$DATA" \
  --variant-timeout "$VARIANT_TIMEOUT" ${VARIANTS:+--variants $VARIANTS} --json "$OUT/train-pipeline-cuda.json" 2>&1 \
  | grep -v Warning | tee "$OUT/train-pipeline-cuda.log"

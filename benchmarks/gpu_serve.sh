#!/usr/bin/env bash
# The CUDA numbers of the production-vocoding issue (17), as one short script for the lent GPU
# machine, to run after the training relay (benchmarks/gpu_train.sh) in the time left:
#   1. stream latency: time to first audio and stream RTF vs vocode, tiny and base, one sampler per
#      family (benchmarks/stream_latency.py --device cuda);
#   2. concurrent streams on the server, batched vs one window at a time: base, 1/8/32 clients
#      (benchmarks/serve_streams.py --device cuda);
#   3. corpus throughput on one GPU, audio-hours per hour vs plain `vocode`
#      (benchmarks/corpus_throughput.py --device cuda).
# Each part is bounded by its own timeout; the whole script is meant to take about 4 minutes
# (a guess from the H100 base RTF in README.md; not yet measured).
#
# Device run (from the repository root):
#   run(command="bash benchmarks/gpu_serve.sh", carry=[".whl"], timeout_s=420)
# What comes back under $OUT: stream-latency-cuda.json, serve-streams-cuda.json,
# corpus-throughput-cuda.json and their logs; the tables go into README.md ("Use in a TTS service",
# "Vocoding a corpus") with the machine line each prints.
#
# Prepare once, in the repository root (.whl is in .gitignore): the GPU image's wheels, plus the
# serve extra for the GPU machine's Python 3.12 (aiohttp and its dependencies, pinned):
#   mkdir -p .whl && cp ../shared/wheels-gpu/*.whl .whl/
#   python3 -m pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -c requirements/constraints.txt aiohttp -d .whl/
set -u -o pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
started=$SECONDS

echo "== 1. stream latency ($((SECONDS - started)) s)"
timeout 120 python3 benchmarks/stream_latency.py --device cuda --sizes tiny base --repeats 3 \
  --json "$OUT/stream-latency-cuda.json" 2>&1 | grep -v Warning | tee "$OUT/stream-latency-cuda.log"

echo "== 2. concurrent streams, batched vs one at a time ($((SECONDS - started)) s)"
timeout 150 python3 benchmarks/serve_streams.py --device cuda --sizes base --clients 1 8 32 --seconds 5 \
  --json "$OUT/serve-streams-cuda.json" 2>&1 | grep -v Warning | tee "$OUT/serve-streams-cuda.log"

echo "== 3. corpus throughput per GPU ($((SECONDS - started)) s)"
timeout 120 python3 benchmarks/corpus_throughput.py --device cuda --model tiny \
  --json "$OUT/corpus-throughput-cuda.json" 2>&1 | grep -v Warning | tee "$OUT/corpus-throughput-cuda.log"
echo "== done ($((SECONDS - started)) s)"

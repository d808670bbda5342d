#!/usr/bin/env bash
# One short, prepared GPU benchmark run: Llama ~1B in bfloat16 with cuDNN attention, then
# gpt2_124m, on one GPU, printing `gptjax bench` reports (JSON under $OUT when set).
#
# Usage: tools/gpu/bench_h200.sh [--dry-run] [--help]
#   Installs jax[cuda12] and gptjax into .venv-gpu when it is missing (needs a reachable
#   package registry, or wheels brought along), then times both configs: 3 warm-up and 10
#   timed steps each. Not yet run on a GPU. MFU is against the datasheet bf16 dense peak of
#   the chip (gptjax/train/peak.py: H100/H200 989 TFLOP/s).
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --help | -h) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    *) echo "bench_h200.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/gptjax-gpu-bench}"
VENV=.venv-gpu
run() { echo "+ $*"; if [[ $DRY_RUN == 0 ]]; then "$@"; fi; }

if [[ ! -x $VENV/bin/gptjax ]]; then
  run python3 -m venv "$VENV"
  run "$VENV/bin/pip" install --quiet 'jax[cuda12]>=0.10.2,<0.13' -e .
fi
run mkdir -p "$OUT"
# Llama 1B: one micro-batch of 8 rows x 2048 per step (no accumulation), remat "dots":
# what fits 141 GB beside float32 AdamW state, with the fused cuDNN flash-attention kernel.
run "$VENV/bin/gptjax" bench --config configs/llama_1b.py --steps 10 --warmup 3 \
  --config.mesh.fsdp=1 --config.train.global_batch_size=8 --config.train.grad_accum_steps=1 \
  --config.model.remat=dots --config.model.attention=cudnn --json "$OUT/llama_1b.json"
run "$VENV/bin/gptjax" bench --config configs/gpt2_124m.py --steps 10 --warmup 3 \
  --config.mesh.fsdp=1 --config.train.global_batch_size=16 --config.train.grad_accum_steps=1 \
  --config.model.attention=cudnn --json "$OUT/gpt2_124m.json"
for f in "$OUT"/*.json; do
  if [[ -f $f ]]; then echo "$f"; cat "$f"; fi
done

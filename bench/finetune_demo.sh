#!/usr/bin/env bash
# Does pretraining help? Pretrain a small model on Python's documentation texts, fine-tune it on
# the-verdict with --init-from, train the same shape from scratch for the same steps, and score
# both with --eval-only on the-verdict's validation part (its last 10%, as v1 splits it).
# Usage: bash bench/finetune_demo.sh [OUT_DIR]   (about 25 minutes on two CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/finetune-demo}
mkdir -p "$out"
v1() { uv run python MyGPT_v1_local-train.py "$@"; }

uv run python bench/pydoc_text.py "$out/pydoc.txt"
uv run python -c "
import sys; t = open('the-verdict.txt').read()
open(sys.argv[1], 'w').write(t[int(0.9 * len(t)):])" "$out/verdict-val.txt"

shape=(--emb-dim 256 --n-layers 4 --n-heads 4 --context-length 128 --batch-size 8)
v1 --data "$out/pydoc.txt" "${shape[@]}" --max-steps 300 --lr 1e-3 --warmup-steps 20 \
   --lr-decay cosine --grad-clip 1.0 --eval-freq 50 --output-dir "$out/pretrained"
# The same 90 steps on the-verdict's training part (4 x 128 tokens a step), three ways: the
# pretrained weights with --init-from's defaults (lr 5e-5, no dropout), the pretrained weights
# with the from-scratch settings (lr 4e-4, dropout 0.1), and new weights with those settings.
same=(--context-length 128 --batch-size 4 --epochs 10 --eval-freq 9)
v1 --init-from "$out/pretrained/model.safetensors" "${same[@]}" --output-dir "$out/fine-tuned"
v1 --init-from "$out/pretrained/model.safetensors" "${same[@]}" --lr 4e-4 --drop-rate 0.1 \
   --output-dir "$out/fine-tuned-4e-4"
v1 "${shape[@]}" "${same[@]}" --output-dir "$out/scratch"

for model in pretrained fine-tuned fine-tuned-4e-4 scratch; do
  printf '%-11s ' "$model"
  v1 --eval-only --init-from "$out/$model/model.safetensors" --data "$out/verdict-val.txt"
done

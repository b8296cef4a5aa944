#!/usr/bin/env bash
# LoRA beside full fine-tuning: the model that finetune_demo.sh pretrains on Python's
# documentation, fine-tuned on the-verdict's first 90% (10 epochs, 90 steps of 4 x 128 tokens),
# scored with --eval-only on its last 10%: no fine-tuning, full fine-tuning, LoRA ranks 4, 16
# and 64, each at the learning rates below (the best of each is the README's row).
# Usage: bash bench/lora_demo.sh [OUT_DIR]   (pretrains first unless OUT_DIR/pretrained has it)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/finetune-demo}
mkdir -p "$out"
v1() { uv run python MyGPT_v1_local-train.py "$@"; }

if [[ ! -f "$out/pretrained/model.safetensors" ]]; then
  uv run python bench/pydoc_text.py "$out/pydoc.txt"
  v1 --data "$out/pydoc.txt" --emb-dim 256 --n-layers 4 --n-heads 4 --context-length 128 \
     --batch-size 8 --max-steps 300 --lr 1e-3 --warmup-steps 20 --lr-decay cosine \
     --grad-clip 1.0 --eval-freq 50 --output-dir "$out/pretrained"
fi
uv run python -c "
import sys; t = open('the-verdict.txt').read()
open(sys.argv[1], 'w').write(t[int(0.9 * len(t)):])" "$out/verdict-val.txt"

base=(--init-from "$out/pretrained/model.safetensors" --context-length 128 --batch-size 4
      --epochs 10 --eval-freq 9)
score() {  # NAME: the held-out loss of NAME's model
  printf '%-22s ' "$1"
  v1 --eval-only --init-from "$out/$1/model.safetensors" --data "$out/verdict-val.txt"
}
mkdir -p "$out/none" && cp "$out/pretrained/model.safetensors" "$out/none/"
score none
for lr in 5e-5 2e-4 4e-4; do
  v1 "${base[@]}" --lr "$lr" --output-dir "$out/full-$lr" > "$out/full-$lr.log"
  score "full-$lr"
done
for rank in 4 16 64; do
  for lr in 5e-4 2e-3 5e-3; do
    v1 "${base[@]}" --lora-rank "$rank" --lr "$lr" --output-dir "$out/lora$rank-$lr" \
      > "$out/lora$rank-$lr.log"
    score "lora$rank-$lr"
  done
done

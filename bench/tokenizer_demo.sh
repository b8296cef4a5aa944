#!/usr/bin/env bash
# Does your own tokenizer help a small model on a CPU? The same model shape trains for the same
# wall time (MINUTES each, default 3) on Python's documentation with three tokenizers: GPT-2's
# BPE (50,257 tokens), a BPE of 4,096 trained on the same training text, and characters (257).
# Each is scored on held-out text in bits per byte (comparable across tokenizers), and samples.
#
#   bash bench/tokenizer_demo.sh [DIR]        (MINUTES=3 by default; DIR: /tmp/mygpt-tokenizer-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/mygpt-tokenizer-demo}
minutes=${MINUTES:-3}
rm -rf "$out" && mkdir -p "$out"

# 90% of the documentation to train on, the last 10% held out.
uv run python - "$out" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "bench")
from pydoc_text import pydoc_text
text, out = pydoc_text(), Path(sys.argv[1])
cut = int(len(text) * 0.9)
(out / "train.txt").write_text(text[:cut])
(out / "val.txt").write_text(text[cut:])
PY
uv run mygpt tokenizer train --data "$out/train.txt" --vocab-size 4096 --out "$out/bpe4k" | tail -1

shape=(--context-length 128 --emb-dim 128 --n-layers 4 --n-heads 4 --batch-size 8 --lr 1e-3
  --data "$out/train.txt")
declare -A spec=([gpt2]=gpt2 [bpe4k]="$out/bpe4k" [char]=char)
declare -A new_tokens=([gpt2]=60 [bpe4k]=60 [char]=240)  # about 240 bytes of text each
milliseconds_for() {  # the wall time of a run of $1 steps with tokenizer $name
  local start
  start=$(date +%s%N)
  uv run mygpt train "${shape[@]}" --tokenizer "${spec[$name]}" --max-steps "$1" \
    --eval-freq 1000 --output-dir "$out/calibrate-$name-$1" > /dev/null
  echo $(( ($(date +%s%N) - start) / 1000000 ))
}
for name in gpt2 bpe4k char; do
  # Time 10 and 30 steps (the difference leaves out starting up), then fill the budget.
  t10=$(milliseconds_for 10) t30=$(milliseconds_for 30)
  steps=$(( minutes * 60 * 1000 * 20 / (t30 - t10) ))
  uv run mygpt train "${shape[@]}" --tokenizer "${spec[$name]}" --max-steps "$steps" \
    --eval-freq $((steps / 4)) --output-dir "$out/$name" > "$out/$name.log"
  echo "$name: $steps steps in about $minutes minutes"
  echo "$steps" > "$out/$name.steps"
  uv run mygpt eval "$out/$name/model.safetensors" --task text --data "$out/val.txt" \
    --json "$out/$name.json" > /dev/null
  printf '{"prompt": "The return statement"}\n' > "$out/prompt.jsonl"
  uv run mygpt generate "$out/$name/model.safetensors" --input "$out/prompt.jsonl" \
    --output "$out/$name-sample.jsonl" --temperature 0.8 --top-k 40 --seed 1 \
    --max-new-tokens "${new_tokens[$name]}" > /dev/null 2>&1
done

uv run python - "$out" <<'PY'
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1])
print("\n| tokenizer | vocabulary | parameters | steps | minutes | held-out tokens | bits per byte |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for name in ("gpt2", "bpe4k", "char"):
    log = (out / f"{name}.log").read_text()
    vocab = int(re.search(r"- vocab_size: (\d+)", log)[1])
    params = re.search(r"\(([\d,]+) parameters", log)[1]
    minutes = re.search(r"Training completed in ([\d.]+) minutes", log)[1]
    steps = int((out / f"{name}.steps").read_text())
    metrics = json.loads((out / f"{name}.json").read_text())["results"]["text"]
    print(f"| {name} | {vocab:,} | {params} | {steps:,} | {minutes} | {metrics['tokens']:,} | "
          f"{metrics['bits_per_byte']:.3f} |")
for name in ("gpt2", "bpe4k", "char"):
    line = json.loads((out / f"{name}-sample.jsonl").read_text())
    print(f"\n{name}: The return statement{line['completion']!r}")
PY

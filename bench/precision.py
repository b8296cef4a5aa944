"""What bfloat16 and int8 weights cost in quality: held-out loss and greedy tokens vs float32.

    uv run python bench/precision.py                          # a model v1 trains on pydoc text
    uv run python bench/precision.py --weights model.safetensors --text held-out.txt
    uv run python bench/precision.py --checkpoint-dir ~/.cache/mygpt/gpt2/124M --text t.txt

Without --weights or --checkpoint-dir, v1 trains a small model on Python's documentation
texts (bench/pydoc_text.py) once, into --work, and the held-out text is the last 10% of those
texts, which v1 validated on. The loss is `score_tokens`'s, the number `--eval-only` prints.
Bounds: bfloat16 within 0.5% of float32's loss, int8 within 2%.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mygpt import (  # noqa: E402
    for_inference,
    generate,
    get_tokenizer,
    load_tokens,
    load_weights,
    score_tokens,
    split_text,
)

BOUNDS = {"float32": 0.0, "bfloat16": 0.005, "int8": 0.02}
TRAIN = shlex.split(
    "--emb-dim 256 --n-layers 4 --n-heads 4 --context-length 128 --batch-size 8 "
    "--max-steps 150 --lr 1e-3 --warmup-steps 10 --lr-decay cosine --grad-clip 1.0 "
    "--eval-freq 50"
)


def trained_model(work: Path) -> tuple[Path, Path]:
    """v1's model trained on pydoc text (made once), and the held-out part of that text."""
    from pydoc_text import pydoc_text

    work.mkdir(parents=True, exist_ok=True)
    text = pydoc_text()
    held_out = work / "held-out.txt"
    held_out.write_text(split_text(text, 0.9)[1])  # v1's validation part
    weights = work / "model.safetensors"
    if not weights.exists():
        (work / "pydoc.txt").write_text(text)
        script = ROOT / "MyGPT_v1_local-train.py"
        subprocess.run(
            [
                sys.executable,
                str(script),
                "--data",
                str(work / "pydoc.txt"),
                *TRAIN,
                "--output-dir",
                str(work),
            ],
            check=True,
        )
    return weights, held_out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", type=Path, help="a v1 model.safetensors or checkpoint.pt")
    p.add_argument("--checkpoint-dir", type=Path, help="a GPT-2 folder (OpenAI or hub layout)")
    p.add_argument("--text", type=Path, help="held-out text to score")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "precision")
    p.add_argument("--new-tokens", type=int, default=200)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if args.weights or args.checkpoint_dir:
        if not args.text:
            p.error("--text: the held-out text to score the model on")
        model, source = load_weights(args.weights or args.checkpoint_dir)
        held_out = args.text
    else:
        weights, held_out = trained_model(args.work)
        model, source = load_weights(weights)
        held_out = args.text or held_out

    tokenizer = get_tokenizer()
    tokens = load_tokens(held_out, tokenizer)  # as --eval-only reads it
    prompt = torch.tensor([tokens[:8].tolist()])
    rows, reference = {}, None
    for precision in BOUNDS:
        fast = for_inference(model, precision)
        start = time.perf_counter()
        score = score_tokens(fast, tokens, batch_size=4)
        seconds = time.perf_counter() - start
        ids = generate(fast, prompt, args.new_tokens)[0, prompt.shape[1] :]
        if reference is None:
            reference = (score.loss, ids)
        rel = score.loss / reference[0] - 1
        rows[precision] = {
            "loss": score.loss,
            "relative_to_float32": rel,
            "within_bound": abs(rel) <= BOUNDS[precision],
            "share_of_float32_tokens": (ids == reference[1]).float().mean().item(),
            "eval_seconds": seconds,
        }
    print(
        f"{source}, scored on {len(tokens) - 1:,} tokens of {held_out}; "
        f"{args.new_tokens} greedy tokens after an 8-token prompt"
    )
    print("| precision | loss | vs float32 | bound | greedy tokens equal to float32's |")
    print("| --- | --- | --- | --- | --- |")
    for precision, r in rows.items():
        bound = f"{BOUNDS[precision]:.1%}" + (" ok" if r["within_bound"] else " EXCEEDED")
        print(
            f"| {precision} | {r['loss']:.4f} | {r['relative_to_float32']:+.3%} | {bound} | "
            f"{r['share_of_float32_tokens']:.1%} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"source": source, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

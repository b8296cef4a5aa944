"""Write a synthetic English-like corpus: a folder of .txt files drawn from a word-level Markov
chain fitted on the-verdict.txt. For trying training at scale without downloading anything:

    uv run python bench/synthetic_corpus.py --megabytes 50 --out /tmp/corpus
    uv run python MyGPT_v1_local-train.py --data /tmp/corpus --max-steps 100
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--megabytes", type=float, default=50.0, help="total size of the corpus")
    p.add_argument("--files", type=int, default=100, help="documents (files) to write")
    p.add_argument("--out", type=Path, required=True, help="folder to create")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    words = (ROOT / "the-verdict.txt").read_text().split()
    # Second-order chain: the next word depends on the two before it.
    following = defaultdict(list)
    for a, b, c in zip(words, words[1:], words[2:], strict=False):
        following[a, b].append(c)
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    per_file = int(args.megabytes * 1e6 / args.files)
    for n in range(args.files):
        state = rng.choice(list(following))
        out, size, line = [], 0, []
        while size < per_file:
            nxt = following.get(state) or [rng.choice(words)]
            word = rng.choice(nxt)
            line.append(word)
            state = (state[1], word)
            if word.endswith((".", "?", "!")) and len(line) > 40:  # paragraphs
                text = " ".join(line) + "\n\n"
                out.append(text)
                size += len(text.encode())
                line = []
        (args.out / f"doc{n:04d}.txt").write_text("".join(out))
    total = sum(f.stat().st_size for f in args.out.glob("*.txt"))
    print(f"Wrote {args.files} files, {total / 1e6:.1f} MB, to {args.out}")


if __name__ == "__main__":
    main()

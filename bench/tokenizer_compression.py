"""Bytes per token of GPT-2's BPE beside BPEs of 4k, 16k and 32k tokens trained on each text's
own training part (90%), measured on its held-out 10%: English (Python's documentation) and
German (the Debian package fortunes-de, 0.35-1: sayings, jokes and poems in German).

    apt-get download fortunes-de && dpkg-deb -x fortunes-de_*.deb /tmp/fortunes-de
    uv run python bench/tokenizer_compression.py --german /tmp/fortunes-de

Also characters (char: one token per byte). A BPE stops early when no pair occurs twice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydoc_text import pydoc_text

from mygpt.bpe import count_words, train_bpe
from mygpt.tokenizer import char_tokenizer, get_tokenizer, make_tokenizer

SIZES = (4096, 16384, 32768)


def german(folder: Path) -> str:
    """The fortune files of fortunes-de (UTF-8), in name order; not the .dat indexes nor the
    .u8 links to the same files."""
    files = sorted((folder / "usr/share/games/fortunes/de").iterdir())
    keep = [f for f in files if f.suffix not in (".dat", ".u8") and not f.is_symlink()]
    return "\n".join(f.read_text(encoding="utf-8") for f in keep)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--german", type=Path, required=True, help="fortunes-de extracted here")
    args = p.parse_args()
    texts = {"English (pydoc)": pydoc_text(), "German (fortunes-de)": german(args.german)}
    rows = {}
    for name, text in texts.items():
        cut = int(len(text) * 0.9)
        train, held = text[:cut], text[cut:]
        counts = count_words([train])
        tokenizers = {"GPT-2 (50,257)": get_tokenizer(), "char (257)": char_tokenizer()}
        for size in SIZES:
            t = make_tokenizer(train_bpe(counts, size), "bpe")
            tokenizers[f"BPE {size // 1024}k ({t.n_vocab:,})"] = t
        n_bytes = len(held.encode())
        rows[name] = {k: n_bytes / len(t.encode_ordinary(held)) for k, t in tokenizers.items()}
        print(f"{name}: {len(train.encode()):,} bytes to train on, {n_bytes:,} held out")
    print()
    print("| tokenizer | " + " | ".join(rows) + " |")
    print("| --- |" + " --- |" * len(rows))
    for label in next(iter(rows.values())):
        cells = []
        for name in rows:
            key = next(k for k in rows[name] if k.split(" (")[0] == label.split(" (")[0])
            cells.append(f"{key.split(' (')[1][:-1]} tokens: {rows[name][key]:.3f}")
        print(f"| {label.split(' (')[0]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Train a tokenizer on your text: byte-level BPE with GPT-2's pre-tokenizer, or characters."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import regex
from tqdm import tqdm

from mygpt.bpe import GPT2_PATTERN, count_words, train_bpe
from mygpt.cli.common import HelpFormatter, add_settings, run_main, settings_from
from mygpt.data.corpus import corpus_documents
from mygpt.errors import DataError, UserError
from mygpt.io.files import write_folder_atomically
from mygpt.settings import as_paths, require, setting
from mygpt.tokenizer import char_tokenizer, make_tokenizer, save_tokenizer

TRAIN = "train"


@dataclass(frozen=True)
class TokenizerSettings:
    """What the tokenizer learns from, its size, and where it goes."""

    data: Path = setting(
        None,
        "a text, Parquet or JSON Lines file, or a folder of them (as training's --data)",
        group=TRAIN,
    )
    out: Path = setting(
        None, "the folder to write (tokenizer.tiktoken, tokenizer.json)", group=TRAIN
    )
    vocab_size: int = setting(
        4096, "tokens, <|endoftext|> included (bpe; char has 257)", group=TRAIN
    )
    kind: str = setting(
        "bpe",
        "bpe: byte-level BPE with GPT-2's pre-tokenizer; char: each character as its UTF-8 "
        "bytes (257 tokens, no training)",
        group=TRAIN,
        choices=("bpe", "char"),
    )
    pattern: str = setting(
        GPT2_PATTERN,
        "the pre-tokenizer: a regular expression (Python's regex module) whose matches are "
        "the words merges stay within (default: GPT-2's; only GPT-2's exports to GGUF)",
        group=TRAIN,
        metavar="REGEX",
    )
    text_field: str = setting(
        "text", "the Parquet column or JSON field of a document's text", group=TRAIN
    )

    def __post_init__(self) -> None:
        as_paths(self, "data", "out")
        require(self.out is not None, "out", "is required")
        require(self.data is not None or self.kind == "char", "data", "is required by bpe")
        require(
            self.vocab_size >= 257,
            "vocab_size",
            "must be at least 257 (the bytes and <|endoftext|>)",
        )
        require(
            self.vocab_size < 2**16, "vocab_size", "must be below 65,536 (token files hold 16 bits)"
        )
        try:
            regex.compile(self.pattern)
        except regex.error as e:
            raise UserError(f"--pattern {self.pattern!r}: not a regular expression ({e})") from None


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    train = sub.add_parser(
        "train", help="train one on a corpus", description=__doc__, formatter_class=HelpFormatter
    )
    add_settings(train, TokenizerSettings)
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`mygpt tokenizer train --data CORPUS --vocab-size N --out DIR`."""
    args = parse_args(argv, prog)
    s = settings_from(TokenizerSettings, args)
    if s.out.exists() and (not s.out.is_dir() or any(s.out.iterdir())):
        raise UserError(f"--out {s.out}: the folder is not empty")
    try:
        s.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {s.out}: cannot write there ({e.strerror})") from None
    if s.kind == "char":
        tokenizer = char_tokenizer()
    else:
        start = time.perf_counter()
        counts, n_bytes = Counter(), 0
        for doc in corpus_documents(s.data, s.text_field):
            counts.update(count_words([doc], s.pattern))
            n_bytes += len(doc.encode("utf-8"))
        print(
            f"Counted {len(counts):,} distinct words in {n_bytes / 1e6:,.1f} MB "
            f"({time.perf_counter() - start:.1f} s)"
        )
        if not counts:
            raise DataError(f"{s.data}: no text")
        n_merges = s.vocab_size - 257
        with tqdm(total=n_merges, unit="merge", file=sys.stderr, disable=None) as bar:
            ranks = train_bpe(counts, s.vocab_size, progress=bar.update)
        tokenizer = make_tokenizer(ranks, "bpe", s.pattern)
        n_tokens = sum(
            len(tokenizer.encode_ordinary(w.decode("utf-8", "replace"))) * n
            for w, n in counts.items()
        )
        print(
            f"Trained {tokenizer.n_vocab:,} tokens in {time.perf_counter() - start:.1f} s"
            f"{'' if len(ranks) == s.vocab_size - 1 else ' (no pair left to merge twice)'}; "
            f"{n_bytes / max(n_tokens, 1):.2f} bytes per token on its text"
        )
    folder = write_folder_atomically(s.out, lambda tmp: save_tokenizer(tokenizer, tmp))
    print(f"Saved {tokenizer.name} to {folder}: use it with --tokenizer {folder}")


if __name__ == "__main__":
    run_main(main)

"""MyGPT's BPE trainer beside Hugging Face `tokenizers`' BpeTrainer (byte-level, the same
vocabulary size): training time, peak memory (each run in its own process) and compression
(bytes per token) on held-out text.

    uv run python bench/tokenizer_train.py --megabytes 10 100 --vocab-size 32768

The corpus is real text found offline: the Python source files of this environment's
packages (code and docstrings), concatenated in path order; the held-out text is the
megabyte after the largest training slice.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import sysconfig
import time
from pathlib import Path


def make_corpus(path: Path, megabytes: float) -> Path:
    """`megabytes` of the site-packages' .py files (and one more for held-out text)."""
    site = Path(sysconfig.get_paths()["purelib"])
    want, parts, n = int((megabytes + 1) * 1e6), [], 0
    for f in sorted(site.rglob("*.py")):
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        n += len(text.encode())
        if n >= want:
            break
    data = "\n".join(parts).encode()[:want].decode("utf-8", "ignore")
    path.write_text(data, encoding="utf-8")
    return path


def one(kind: str, data: Path, megabytes: float, vocab_size: int, held_out: str) -> dict:
    """Train on the first `megabytes` of `data`; what it cost and how well it compresses."""
    text = data.read_bytes()[: int(megabytes * 1e6)].decode("utf-8", "ignore")
    start = time.perf_counter()
    if kind == "mygpt":
        from mygpt.bpe import count_words, train_bpe
        from mygpt.tokenizer import make_tokenizer

        tokenizer = make_tokenizer(train_bpe(count_words([text]), vocab_size), "bpe")
        seconds = time.perf_counter() - start
        n_tokens = len(tokenizer.encode_ordinary(held_out))
    else:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator([text], trainer)
        seconds = time.perf_counter() - start
        n_tokens = len(hf.encode(held_out).ids)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "kind": kind,
        "megabytes": megabytes,
        "vocab_size": vocab_size,
        "seconds": seconds,
        "peak_rss_bytes": peak,
        "bytes_per_token": len(held_out.encode()) / n_tokens,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--megabytes", type=float, nargs="+", default=[10.0, 100.0])
    p.add_argument("--vocab-size", type=int, default=32768)
    p.add_argument("--corpus", type=Path, default=Path("/tmp/mygpt-bench-code.txt"))
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--one", help=argparse.SUPPRESS)  # a child's run: mygpt or hf
    p.add_argument("--held-from", type=float, help=argparse.SUPPRESS)  # its held-out text
    args = p.parse_args()
    largest = max(args.megabytes)
    if args.one:
        data, at = args.corpus.read_bytes(), int(args.held_from * 1e6)
        held = data[at : at + 1_000_000].decode("utf-8", "ignore")
        row = one(args.one, args.corpus, args.megabytes[0], args.vocab_size, held)
        print(json.dumps(row))
        return
    if not args.corpus.exists() or args.corpus.stat().st_size < (largest + 1) * 1e6:
        make_corpus(args.corpus, largest)
    rows = []
    for megabytes in args.megabytes:
        for kind in ("hf", "mygpt"):
            cmd = [sys.executable, __file__, "--one", kind, "--megabytes", str(megabytes)]
            cmd += ["--held-from", str(largest)]
            cmd += ["--vocab-size", str(args.vocab_size), "--corpus", str(args.corpus)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.splitlines()[-1]))
            r = rows[-1]
            print(
                f"{r['megabytes']:>6.0f} MB {kind:>6}: {r['seconds']:7.1f} s, "
                f"peak {r['peak_rss_bytes'] / 2**20:7.0f} MiB, "
                f"{r['bytes_per_token']:.4f} bytes/token held out",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

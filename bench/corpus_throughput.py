"""Tokenizing throughput and peak memory of each corpus format, on the same documents.

Writes about --megabytes of documents made from Python's own documentation (pydoc topics and
the docstrings of the standard library, each varied by a numbered header so no two documents
are equal) as one Parquet file (row groups of 10,000 documents), one JSON Lines file, and one
.txt file (the documents joined by <|endoftext|>, which tokenizes to the same ids), then times
`load_tokens(..., memmap=True)` on each in a fresh process and reports MB/s and peak RSS.

    uv run python bench/corpus_throughput.py --megabytes 1024 --out /tmp/corpus-bench
"""

from __future__ import annotations

import argparse
import json
import os
import pydoc
import subprocess
import sys
import time
from pathlib import Path
from pydoc_data.topics import topics

import pyarrow as pa
import pyarrow.parquet as pq

MODULES = (
    "os",
    "re",
    "json",
    "pathlib",
    "collections",
    "itertools",
    "functools",
    "typing",
    "argparse",
    "subprocess",
    "threading",
    "asyncio",
    "email",
    "http.client",
    "sqlite3",
    "unittest",
    "logging",
    "datetime",
    "decimal",
    "fractions",
)


def base_documents() -> list[str]:
    docs = [topics[name] for name in sorted(topics)]
    for name in MODULES:
        module = __import__(name, fromlist=["_"])
        docs += [pydoc.getdoc(getattr(module, a)) for a in dir(module) if not a.startswith("_")]
    return [d for d in docs if len(d) > 200]


def write_corpora(out: Path, megabytes: float) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    base, target = base_documents(), int(megabytes * 1e6)
    paths = {kind: out / f"corpus.{kind}" for kind in ("parquet", "jsonl", "txt")}
    writer = pq.ParquetWriter(paths["parquet"], pa.schema([("text", pa.string())]))
    size, n, batch = 0, 0, []
    with open(paths["jsonl"], "w") as jsonl, open(paths["txt"], "w") as txt:
        while size < target:
            doc = f"Document {n}: {base[n % len(base)]}"
            batch.append(doc)
            jsonl.write(json.dumps({"text": doc}) + "\n")
            txt.write(("<|endoftext|>" if n else "") + doc)
            size, n = size + len(doc.encode()), n + 1
            if len(batch) == 10_000:
                writer.write_table(pa.table({"text": batch}))
                batch = []
        if batch:
            writer.write_table(pa.table({"text": batch}))
    writer.close()
    print(f"{n:,} documents, {size / 1e6:,.0f} MB of text", file=sys.stderr)
    return paths


def measure(path: Path) -> dict:
    """Tokenize in a child process (a fresh cache): seconds, tokens and peak RSS."""
    for old in path.parent.glob(f"{path.name}.mygpt-tokens*"):
        old.unlink()
    code = (
        "import sys, time, numpy as np; from mygpt import get_tokenizer, load_tokens\n"
        "tok = get_tokenizer(); t = time.perf_counter()\n"
        "ids = load_tokens(sys.argv[1], tok, memmap=True, log=lambda s: None)\n"
        "print(time.perf_counter() - t, len(ids), int(np.asarray(ids[-1000:]).sum()))"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True
    )
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS, in kB on Linux
    if status:
        raise SystemExit(f"tokenizing {path} failed")
    seconds, n_tokens, tail = out.split()
    return {
        "seconds": float(seconds),
        "tokens": int(n_tokens),
        "tail": int(tail),
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--megabytes", type=float, default=1024)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    start = time.perf_counter()
    paths = write_corpora(args.out, args.megabytes)
    print(f"written in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    text_mb = paths["txt"].stat().st_size / 1e6
    rows = {kind: measure(path) for kind, path in paths.items()}
    assert len({(r["tokens"], r["tail"]) for r in rows.values()}) == 1, "formats gave other ids"
    print(f"\n{text_mb:,.0f} MB of text, {rows['txt']['tokens']:,} tokens (the same in each)\n")
    print("| format | file (MB) | seconds | MB of text / s | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- |")
    for kind, r in rows.items():
        mb = paths[kind].stat().st_size / 1e6
        print(
            f"| {kind} | {mb:,.0f} | {r['seconds']:.1f} | {text_mb / r['seconds']:.1f} | "
            f"{r['peak_rss_mb']:,.0f} |"
        )


if __name__ == "__main__":
    main()

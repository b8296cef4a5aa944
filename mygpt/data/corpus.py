"""A training corpus: a file or a folder of them (.txt, Parquet, JSON Lines, JSON), as train and
validation tokens; documents.py reads each file's documents.

Small inputs are tokenized in memory and split by characters, as in the book. Large ones are
tokenized once into a uint16 file beside the data (or in the cache folder, for read-only data;
documents separated by <|endoftext|>), reused while the sources are unchanged, memory-mapped
and split by tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken
from tqdm import tqdm

from mygpt.data.documents import SUFFIXES, corpus_kind, documents, pieces
from mygpt.data.windows import TokenWindows, read_text, split_text
from mygpt.errors import DataError
from mygpt.io.files import cache_dir, check_readable, special_kind, write_atomically
from mygpt.tokenizer import ENDOFTEXT

IN_MEMORY_LIMIT = 16 * 2**20  # bytes of text; more than this goes through a token file
CACHE_SUFFIX = ".mygpt-tokens"
_FORMAT = 2  # bump when the token file's layout or the chunking changes
_BATCH_BYTES = 1 << 20  # text per thread per tokenizer call


@dataclass(frozen=True)
class Corpus:
    """Token ids for training and validation (NumPy arrays, possibly memory maps)."""

    train: np.ndarray
    val: np.ndarray
    token_file: Path | None = None  # the cache behind the memory maps, if any

    def windows(
        self, context_length: int, stride: int, batch_rows: int
    ) -> tuple[TokenWindows, TokenWindows]:
        """Train and validation windows; a DataError if either part cannot give a batch."""
        parts = []
        for name, tokens, rows in (
            ("training", self.train, batch_rows),
            ("validation", self.val, 1),
        ):
            if len(tokens) <= context_length:
                raise DataError(
                    f"too short: its {name} part has {len(tokens):,} tokens, "
                    f"one window of {context_length} needs {context_length + 1:,}"
                )
            windows = TokenWindows(tokens, context_length, stride)
            if len(windows) < rows:
                raise DataError(
                    f"too short: its {name} part gives {len(windows)} window(s) "
                    f"of {context_length} tokens, fewer than one batch of {rows}"
                )
            parts.append(windows)
        return parts[0], parts[1]


def text_files(path: Path) -> list[Path]:
    """The file itself, or the corpus files under a folder (.txt, .parquet, .jsonl, .jsonl.gz,
    .json; not MyGPT's own token files) in a stable (sorted) order.

    Only regular files: a pipe or a device (/dev/zero) could block or never end.
    """
    check_readable(path)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if corpus_kind(p) and CACHE_SUFFIX not in p.name)
        odd = [p for p in found if not p.is_file() and not p.is_dir()]
        if odd:
            kind = special_kind(odd[0]) or "a broken link"
            more = f" (and {len(odd) - 1} more)" if len(odd) > 1 else ""
            raise DataError(f"{path}: {odd[0].relative_to(path)} is {kind}, not a file{more}")
        files = [p for p in found if p.is_file()]
        if not files:
            raise DataError(f"{path}: the folder has no corpus files ({', '.join(SUFFIXES)})")
        return files
    if not path.exists():
        raise DataError(f"{path}: no such file")
    return [path]


def load_corpus(
    path: str | Path,
    tokenizer: tiktoken.Encoding,
    train_ratio: float = 0.9,
    memmap: bool | None = None,
    log: Callable[[str], None] = print,
    text_field: str = "text",
) -> Corpus:
    """Tokens of a file or folder; `memmap` None decides by size (IN_MEMORY_LIMIT).
    `text_field`: the Parquet column or JSON field that holds each document's text."""
    path = Path(path)
    files = text_files(path)
    if not _use_memmap(files, memmap):
        train, val = (
            np.array(tokenizer.encode(part, allowed_special={ENDOFTEXT}))
            for part in split_text(_joined_text(path, files, text_field), train_ratio)
        )
        return Corpus(train, val)
    token_file = cached_token_file(path, files, tokenizer, log, text_field)
    tokens = np.memmap(token_file, dtype=np.uint16, mode="r")
    split = int(train_ratio * len(tokens))
    return Corpus(tokens[:split], tokens[split:], token_file)


def load_tokens(
    path: str | Path,
    tokenizer: tiktoken.Encoding,
    memmap: bool | None = None,
    log: Callable[[str], None] = print,
    text_field: str = "text",
) -> np.ndarray:
    """All the tokens of a file or folder, unsplit: in memory, or a memory map of the token file."""
    path = Path(path)
    files = text_files(path)
    if not _use_memmap(files, memmap):
        text = _joined_text(path, files, text_field)
        return np.array(tokenizer.encode(text, allowed_special={ENDOFTEXT}))
    token_file = cached_token_file(path, files, tokenizer, log, text_field)
    return np.memmap(token_file, dtype=np.uint16, mode="r")


def corpus_documents(path: str | Path, text_field: str = "text") -> Iterator[str]:
    """The documents of a file or folder, one file read at a time."""
    path = Path(path)
    for f in text_files(path):
        if corpus_kind(f) != ".txt":
            yield from documents(f, text_field)
            continue
        try:
            yield read_text(f)
        except DataError as e:
            raise DataError(f"{f}: {e}") from None


def corpus_text(path: str | Path, text_field: str = "text") -> str:
    """The whole text of a file or folder, documents joined by <|endoftext|>, untokenized."""
    path = Path(path)
    return _joined_text(path, text_files(path), text_field)


def _use_memmap(files: list[Path], memmap: bool | None) -> bool:
    if memmap is None:
        return sum(f.stat().st_size for f in files) > IN_MEMORY_LIMIT
    return memmap


def _joined_text(path: Path, files: list[Path], text_field: str) -> str:
    """The files' documents, <|endoftext|> between them; a DataError names a bad file."""
    texts = []
    for f in files:
        if corpus_kind(f) != ".txt":
            texts += documents(f, text_field)
            continue
        try:
            texts.append(read_text(f))
        except DataError as e:
            raise DataError(f"{f}: {e}") from None
    if not any(texts):
        raise DataError(f"{path}: the corpus holds no text")
    return ENDOFTEXT.join(texts)


def cached_token_file(
    path: Path,
    files: list[Path],
    tokenizer: tiktoken.Encoding,
    log: Callable[[str], None] = print,
    text_field: str = "text",
) -> Path:
    """The uint16 token file of `files`, made now unless an up-to-date one exists: beside
    `path`, or in the cache folder when the data's folder cannot be written (read-only data)."""
    source = _fingerprint(path, files, tokenizer) | {"text_field": text_field}
    beside = path.with_name(path.name + CACHE_SUFFIX + ".bin")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    in_cache = cache_dir() / "tokens" / f"{path.name}-{digest}{CACHE_SUFFIX}.bin"
    for token_file in (beside, in_cache):
        if (n_tokens := _cached_tokens(token_file, source)) is not None:
            log(f"Using the tokens cached in {token_file} ({n_tokens:,} tokens)")
            return token_file
    refused = []
    for token_file in (beside, in_cache):
        try:
            return _make_token_file(path, token_file, files, tokenizer, source, log)
        except OSError as e:  # a read-only or a full disk, most likely
            refused.append(f"{token_file} ({e.strerror})")
            if token_file == beside:
                log(f"Cannot write the token file beside the data ({e.strerror}): using the cache")
    raise DataError(f"{path}: cannot make its token file {'; nor '.join(refused)}")


def _cached_tokens(token_file: Path, source: dict) -> int | None:
    """The number of tokens in `token_file` if it holds the tokens of `source`, else None."""
    try:
        meta = json.loads(token_file.with_suffix(".json").read_text())
        if meta["source"] == source and token_file.stat().st_size == 2 * meta["n_tokens"]:
            return meta["n_tokens"]
    except (OSError, ValueError, KeyError):
        pass  # no cache, or not this one
    return None


def _make_token_file(
    path: Path, token_file: Path, files: list[Path], tokenizer: tiktoken.Encoding, source, log
) -> Path:
    start = time.perf_counter()
    total = sum(f.stat().st_size for f in files)
    token_file.parent.mkdir(parents=True, exist_ok=True)
    counted = []

    def tokenize(tmp: Path) -> None:
        counted.append(_tokenize_to_file(files, total, tokenizer, tmp, source["text_field"]))
        if counted[0] == 0:
            raise DataError(f"{path}: the corpus holds no text")

    write_atomically(token_file, tokenize)  # another run may be making the same file: each its own
    n_tokens = counted[0]
    meta = json.dumps({"source": source, "n_tokens": n_tokens}, indent=1)
    write_atomically(token_file.with_suffix(".json"), lambda tmp: tmp.write_text(meta))
    log(
        f"Tokenized {total / 1e6:,.1f} MB into {n_tokens:,} tokens in "
        f"{time.perf_counter() - start:.1f} s: {token_file}"
    )
    return token_file


def _fingerprint(path: Path, files: list[Path], tokenizer: tiktoken.Encoding) -> dict:
    """What the token file depends on: each file's name, size and modification time."""
    stats = [(str(f.relative_to(path)) if f != path else f.name, f.stat()) for f in files]
    listing = json.dumps([(name, s.st_size, s.st_mtime_ns) for name, s in stats])
    return {
        "format": _FORMAT,
        "tokenizer": tokenizer.name,
        "files": len(files),
        "sha256": hashlib.sha256(listing.encode()).hexdigest(),
    }


def _tokenize_to_file(
    files: list[Path],
    total_bytes: int,
    tokenizer: tiktoken.Encoding,
    token_file: Path,
    text_field: str = "text",
) -> int:
    """Write the ids of all files' documents, <|endoftext|> between them, as uint16, into
    `token_file`; their number. Documents stream through in batches of about 1 MB per thread."""
    assert tokenizer.n_vocab <= 2**16, "ids must fit in uint16"
    threads = os.cpu_count() or 1
    endoftext = np.array([tokenizer.eot_token], dtype=np.uint16).tobytes()
    n_tokens, first, batch, batch_bytes = 0, True, [], 0

    def flush(out, bar) -> None:
        nonlocal n_tokens, first
        texts = [piece.text for piece in batch]
        for piece, ids in zip(
            batch,
            tokenizer.encode_batch(texts, num_threads=threads, allowed_special={ENDOFTEXT}),
            strict=True,
        ):
            if piece.starts_document and not first:
                out.write(endoftext)
                n_tokens += 1
            first = False
            out.write(np.array(ids, dtype=np.uint16).tobytes())
            n_tokens += len(ids)
        bar.update(sum(piece.n_bytes for piece in batch))
        batch.clear()

    with (
        open(token_file, "wb") as out,
        tqdm(total=total_bytes, unit="B", unit_scale=True, desc="Tokenizing", disable=None) as bar,
    ):
        for f in files:
            for piece in pieces(f, text_field):
                batch.append(piece)
                batch_bytes += len(piece.text)
                if batch_bytes >= threads * _BATCH_BYTES:
                    flush(out, bar)
                    batch_bytes = 0
        flush(out, bar)
    return n_tokens

"""The documents of a corpus file, read as a stream.

A .txt file is one document, read in pieces of about 1 MB cut where tokenization is unaffected.
Each Parquet row (read a record batch at a time with pyarrow), JSON line (.jsonl, .jsonl.gz)
or record of a .json list holds one document in its text field. A bad record is a DataError
that names the file and the row, line or record.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mygpt.errors import DataError

SUFFIXES = (".txt", ".parquet", ".jsonl", ".jsonl.gz", ".json")
_CHUNK = 1 << 20  # bytes of text per piece of a .txt file
_ROWS = 1024  # Parquet rows per record batch: bounded memory whatever the file's row groups
# A cut after a newline between two visible ASCII characters never splits one of GPT-2's
# pre-tokens, so encoding the pieces gives exactly the ids of encoding the whole text. (Not
# after "\n\n" before "*": whole, the pattern's \s+(?!\S) splits it "\n", "\n"; at a
# piece's end it is one pre-token.)
_SAFE_CUT = re.compile(rb"(?<=[!-~])\n(?=[!-~])")


@dataclass(frozen=True)
class Piece:
    """Text to tokenize; `starts_document`: an <|endoftext|> goes before it (but the first);
    `n_bytes`: how much of the file it accounts for, for a progress bar."""

    text: str
    starts_document: bool
    n_bytes: int


def corpus_kind(path: Path) -> str | None:
    """The suffix that says how to read `path` (".jsonl.gz", ...), or None if it is no corpus."""
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def pieces(path: Path, text_field: str = "text") -> Iterator[Piece]:
    """The pieces of `path`'s documents in order, as its kind says."""
    kind = corpus_kind(path)
    if kind == ".txt":
        return _text_pieces(path)
    if kind == ".parquet":
        return _parquet_pieces(path, text_field)
    if kind == ".json":
        return _json_pieces(path, text_field)
    return _jsonl_pieces(path, text_field)


def documents(path: Path, text_field: str = "text") -> list[str]:
    """All of `path`'s documents, whole (for corpora small enough to hold in memory)."""
    docs: list[str] = []
    for piece in pieces(path, text_field):
        if piece.starts_document or not docs:
            docs.append(piece.text)
        else:
            docs[-1] += piece.text
    return docs


def _text_pieces(path: Path) -> Iterator[Piece]:
    offset, rest, first = 0, b"", True
    with open(path, "rb") as f:
        while True:
            block = f.read(_CHUNK)
            data = rest + block
            cut = len(data) if not block else _last_safe_cut(data)
            piece, rest = data[:cut], data[cut:]
            if piece:
                try:
                    text = piece.decode("utf-8")
                except UnicodeDecodeError as e:
                    where = offset + e.start
                    raise DataError(
                        f"{path}: is not UTF-8 text (invalid byte at offset {where})"
                    ) from None
                yield Piece(text, first, len(piece))
                offset, first = offset + len(piece), False
            if not block:
                return


def _last_safe_cut(data: bytes) -> int:
    """Just after the last newline followed by a visible ASCII character; 0 if none."""
    cut = 0
    for match in _SAFE_CUT.finditer(data, max(0, len(data) - _CHUNK)):
        cut = match.end()
    return cut


def _parquet_pieces(path: Path, text_field: str) -> Iterator[Piece]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # Reads of 1 MB, not whole column chunks at once: memory stays flat (1 GB file: the
        # process peaks 440 MB lower).
        table = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a Parquet file ({str(e).splitlines()[0]})") from None
    columns = table.schema_arrow.names
    if text_field not in columns:
        raise DataError(
            f"{path}: no column {text_field!r} (its columns: {', '.join(columns)}); "
            "--text-field names the one holding the text"
        )
    field_type = table.schema_arrow.field(text_field).type
    if pa.types.is_dictionary(field_type):  # strings stored once each, by index
        field_type = field_type.value_type
    if not (pa.types.is_string(field_type) or pa.types.is_large_string(field_type)):
        raise DataError(f"{path}: column {text_field!r} holds {field_type}, not text")
    size, rows, row = path.stat().st_size, max(1, table.metadata.num_rows), 0
    for batch in _batches(table, text_field, path):
        texts = batch.column(0).to_pylist()
        share = size * len(texts) // rows
        for i, text in enumerate(texts):
            if text is None:
                raise DataError(f"{path}: row {row + i + 1}: {text_field!r} is null, not text")
            yield Piece(text, True, share if i == 0 else 0)
        row += len(texts)


def _batches(table, text_field: str, path: Path) -> Iterator:
    """The column's record batches; damaged pages (a bad checksum or compression) a DataError."""
    import pyarrow as pa

    batches = table.iter_batches(batch_size=_ROWS, columns=[text_field])
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: damaged ({str(e).splitlines()[0]})") from None
        yield batch


def _jsonl_pieces(path: Path, text_field: str) -> Iterator[Piece]:
    with open(path, "rb") as raw:
        lines = gzip.GzipFile(fileobj=raw) if corpus_kind(path) == ".jsonl.gz" else raw
        done = 0
        try:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError) as e:
                    reason = json_reason(e, one_line=True)
                    raise DataError(f"{path}: line {number}: not JSON ({reason})") from None
                text = _text_of(record, text_field, path, f"line {number}")
                yield Piece(text, True, raw.tell() - done)
                done = raw.tell()
        except (OSError, EOFError, zlib.error) as e:  # a damaged or truncated gzip stream
            raise DataError(f"{path}: cannot be read ({e})") from None


def _json_pieces(path: Path, text_field: str) -> Iterator[Piece]:
    """A .json file is one JSON value, read whole: a list of records (use .jsonl to stream)."""
    try:
        records = json.loads(path.read_bytes())  # bytes: a byte-order mark is allowed
    except (ValueError, RecursionError) as e:
        raise DataError(f"{path}: not JSON ({json_reason(e)})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: not a JSON list of records")
    size = path.stat().st_size
    for number, record in enumerate(records, 1):
        text = _text_of(record, text_field, path, f"record {number}")
        yield Piece(text, True, size if number == 1 else 0)


def json_reason(e: ValueError | RecursionError, one_line: bool = False) -> str:
    """Why json.loads refused a text, in a few words: where, as its line and column (only
    the column for `one_line`, a line of a .jsonl numbered by the caller)."""
    if isinstance(e, RecursionError):
        return "nested too deeply"
    if isinstance(e, json.JSONDecodeError):
        line = "" if one_line else f"line {e.lineno}, "
        return f"{e.msg.removesuffix(' at')} at {line}column {e.colno}"
    return "not UTF-8"


def _text_of(record: Any, text_field: str, path: Path, where: str) -> str:
    if not isinstance(record, dict):
        raise DataError(f"{path}: {where}: not a JSON object with a {text_field!r} field")
    if text_field not in record:
        if {"instruction", "output"} <= record.keys():
            kind = "an instruction record (instruction, output), not text to train on"
            raise DataError(f"{path}: {where}: {kind}")
        fields = ", ".join(record) or "none"
        raise DataError(
            f"{path}: {where}: no {text_field!r} field (its fields: {fields}); "
            "--text-field names the one holding the text"
        )
    text = record[text_field]
    if not isinstance(text, str):
        raise DataError(f"{path}: {where}: {text_field!r} is {type(text).__name__}, not a string")
    return text

"""The evaluation datasets: their canonical sources, one download each, and their records."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mygpt.errors import DataError, UserError
from mygpt.io.files import cache_dir, check_readable
from mygpt.io.gpt2.download import RetryPolicy, fetch


@dataclass(frozen=True)
class Source:
    """Where a task's data is published, and what its file holds."""

    urls: tuple[str, ...]  # the canonical one first, then mirrors
    name: str  # the downloaded file's name
    n_items: int | None = None  # records in the published file: a check of what arrived
    member: str | None = None  # the file to read inside a zip archive


SOURCES = {
    # Rowan Zellers' validation split, as the HellaSwag paper, lm-eval and build-nanogpt use.
    "hellaswag": Source(
        ("https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",),
        "hellaswag_val.jsonl",
        n_items=10042,
    ),
    # OpenAI's LAMBADA test set, the one GPT-2 was scored on (lm-eval's lambada_openai).
    "lambada": Source(
        ("https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl",),
        "lambada_test.jsonl",
        n_items=5153,
    ),
    # Salesforce's raw (untokenized) WikiText archives; the test split is scored.
    "wikitext2": Source(
        (
            "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip",
            "https://wikitext.smerity.com/wikitext-2-raw-v1.zip",
        ),
        "wikitext-2-raw-v1.zip",
        member="wikitext-2-raw/wiki.test.raw",
    ),
    "wikitext103": Source(
        (
            "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-raw-v1.zip",
            "https://wikitext.smerity.com/wikitext-103-raw-v1.zip",
        ),
        "wikitext-103-raw-v1.zip",
        member="wikitext-103-raw/wiki.test.raw",
    ),
}


def default_data_dir() -> Path:
    """$MYGPT_DATA_DIR, else ~/.cache/mygpt (or $XDG_CACHE_HOME/mygpt); files go under eval/."""
    return cache_dir("MYGPT_DATA_DIR")


def task_file(
    task: str,
    data_dir: Path | None = None,
    url: str | None = None,
    retry: RetryPolicy | None = None,
) -> Path:
    """The task's file, downloaded once into `data_dir` (resumable); `url`: a mirror of it."""
    source = SOURCES[task]
    folder = (data_dir or default_data_dir()) / "eval" / task
    dest = folder / source.name
    if dest.is_file():
        return dest
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--data-dir {folder}: cannot write there ({e.strerror})") from None
    fetch(
        [url] if url else list(source.urls),
        dest,
        None,
        retry or RetryPolicy(),
        hint="Or pass --data with a local copy, or --data-url with a mirror.",
    )
    if not url:  # a mirror the user names is trusted; the canonical file must be the published one
        _check_published(task, dest)
    return dest


def _check_published(task: str, path: Path) -> None:
    source = SOURCES[task]
    try:
        if source.member:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()  # every member's CRC
                if bad is not None:
                    raise DataError(f"{bad} is corrupt")
        elif source.n_items is not None:
            n = len(read_jsonl(path))
            if n != source.n_items:
                raise DataError(f"{n} records, the published file has {source.n_items}")
    except (DataError, zipfile.BadZipFile) as e:
        path.unlink()
        raise DataError(
            f"{path.name} from {source.urls[0]} is not the published file: {e}"
        ) from None


def read_jsonl(path: Path) -> list[dict]:
    """JSON objects, one a line; a DataError names the first bad line."""
    check_readable(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n}: not JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}: line {n}: not a JSON object")
            records.append(record)
    return records


def read_task_text(task: str, path: Path) -> str:
    """A WikiText task's test text: the archive's member, or a local text file as it is."""
    member = SOURCES[task].member
    check_readable(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return archive.read(member).decode("utf-8")
        return path.read_text(encoding="utf-8")
    except KeyError:
        raise DataError(f"{path}: the archive has no {member}") from None
    except (UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: {e}") from None

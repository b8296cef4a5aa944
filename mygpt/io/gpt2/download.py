"""Fetch GPT-2 checkpoint files: atomic writes, size checks, Range resume, retries, mirrors."""

from __future__ import annotations

import errno
import http.client
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mygpt.config import GPT2_SIZES
from mygpt.errors import UserError
from mygpt.io.files import cache_dir

OPENAI_FILES = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
)
OPENAI_HOSTS = (
    "https://openaipublic.blob.core.windows.net/gpt-2/models",
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2",
)
_SHARED_SIZES = {"checkpoint": 77, "encoder.json": 1042301, "vocab.bpe": 456318}
# Published sizes: a file from the official hosts must match them, whatever a server claims.
KNOWN_SIZES: dict[str, dict[str, int]] = {
    "124M": {
        **_SHARED_SIZES,
        "hparams.json": 90,
        "model.ckpt.data-00000-of-00001": 497759232,
        "model.ckpt.index": 5215,
        "model.ckpt.meta": 471155,
    },
    "355M": {
        **_SHARED_SIZES,
        "hparams.json": 91,
        "model.ckpt.data-00000-of-00001": 1419292672,
        "model.ckpt.index": 10399,
        "model.ckpt.meta": 926519,
    },
}
# Hugging Face hub repositories with the same weights as safetensors (no TensorFlow needed).
HF_REPOS = {
    "124M": "openai-community/gpt2",
    "355M": "openai-community/gpt2-medium",
    "774M": "openai-community/gpt2-large",
    "1558M": "openai-community/gpt2-xl",
}
HF_FILES = ("config.json", "model.safetensors")
HF_HOST = "https://huggingface.co"

CHUNK = 1 << 20


class DownloadError(UserError):
    """A file could not be fetched from any host; nothing partial is left under its name."""

    exit_code = 1


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try each host: attempts, first back-off (doubling), socket timeout."""

    attempts: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 30.0


def default_models_dir() -> Path:
    """$MYGPT_MODELS_DIR, else ~/.cache/mygpt (or $XDG_CACHE_HOME/mygpt)."""
    return cache_dir("MYGPT_MODELS_DIR")


def download_size(model_size: str, source: str = "openai") -> int | None:
    """Bytes of a full OpenAI download of this size, where the published sizes are known."""
    known = KNOWN_SIZES.get(model_size) if source == "openai" else None
    return sum(known.values()) if known else None


def check_size(model_size: str) -> None:
    if model_size not in GPT2_SIZES:
        raise UserError(
            f"unknown GPT-2 model size {model_size!r}; valid sizes: {', '.join(GPT2_SIZES)}"
        )


def _is_complete(dest: Path, known_size: int | None) -> bool:
    # Only a verified download is ever renamed to this name, but a file put here by hand must
    # still have the published size where one is known.
    return dest.is_file() and known_size in (None, dest.stat().st_size)


def _make_folder(folder: Path, models_dir: Path) -> None:
    """The download folder exists and takes files, or a UserError before anything is fetched."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".mygpt-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except (NotADirectoryError, FileExistsError):
        raise UserError(
            f"--models-dir {models_dir}: a part of it is a file, not a folder"
        ) from None
    except OSError as e:
        raise UserError(f"--models-dir {models_dir}: cannot write there ({e.strerror})") from None


def download_gpt2(
    model_size: str = "124M",
    models_dir: str | Path | None = None,
    base_url: str | None = None,
    source: str = "openai",
    retry: RetryPolicy = RetryPolicy(),
    on_start: Callable[[], None] | None = None,
) -> Path:
    """Download one GPT-2 size into models_dir (once) and return its folder.

    source "openai": OpenAI's TensorFlow checkpoint, from {host}/{size}/{file}, host being
    OpenAI's then its mirror, or `base_url`. source "hf": the hub's safetensors, from
    {host}/{repo}/resolve/main/{file}. Files already complete are not fetched again (and
    then the network is not touched); `on_start` is called before the first download.
    """
    check_size(model_size)
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    if source == "openai":
        folder = models_dir / "gpt2" / model_size
        hosts = [base_url] if base_url else list(OPENAI_HOSTS)
        files, path = OPENAI_FILES, model_size
    elif source == "hf":
        folder = models_dir / "hf" / HF_REPOS[model_size]
        hosts = [base_url or HF_HOST]
        files, path = HF_FILES, f"{HF_REPOS[model_size]}/resolve/main"
    else:
        raise UserError(f"unknown source {source!r}; use 'openai' or 'hf'")
    # Sizes are only known for OpenAI's own files; a server the user names is trusted.
    known = KNOWN_SIZES.get(model_size, {}) if source == "openai" and not base_url else {}
    missing = [name for name in files if not _is_complete(folder / name, known.get(name))]
    if missing:  # a read-only cache that holds the whole model is fine
        _make_folder(folder, models_dir)
    for name in missing:
        dest = folder / name
        if on_start:
            on_start()
            on_start = None
        urls = [f"{host.rstrip('/')}/{path}/{name}" for host in hosts]
        fetch(urls, dest, known.get(name), retry)
    return folder


def fetch(
    urls: list[str],
    dest: Path,
    known_size: int | None,
    retry: RetryPolicy,
    hint: str = "Or pass --base-url, or --checkpoint-dir with a local copy.",
) -> None:
    """Download to dest + ".part", resuming what is there, and rename once it is complete;
    `hint` ends the message of a download that failed."""
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        for attempt in range(retry.attempts):
            if attempt:
                time.sleep(retry.backoff_s * 2 ** (attempt - 1))
            try:
                _transfer(url, part, known_size, retry.timeout_s)
                os.replace(part, dest)
                return
            except urllib.error.HTTPError as e:
                errors.append(f"{url}: HTTP {e.code}")
                if e.code < 500:
                    break  # 404, 403, ...: this host will not have it; try the next
            except _WrongFile as e:
                errors.append(f"{url}: {e}")
                break
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                    errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
                    continue  # connection refused/reset, a timeout: retry, resuming
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"could not write {part} ({e.strerror}): {kept:,} bytes are kept there; "
                    "make room and run again to resume the download"
                ) from None
            except (http.client.HTTPException, _Incomplete) as e:  # a cut transfer: retry, resuming
                errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
    hosts = ", ".join(sorted({u.split("/")[2] for u in urls}))
    raise DownloadError(
        f"could not download {dest.name} (tried {hosts}; last error: {errors[-1]}). "
        "Check your connection and run again: finished files are kept and "
        f"this one resumes. {hint}"
    )


class _Incomplete(Exception):
    """The server closed the transfer before all promised bytes arrived."""


class _WrongFile(Exception):
    """The host offers a file that cannot be the published one."""


def _transfer(url: str, part: Path, known_size: int | None, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    if known_size is not None and have > known_size:
        have = 0  # not a prefix of the right file: start over
    headers = {"User-Agent": "mygpt"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have and have == known_size:
            return  # the part file already holds everything
        if e.code == 416:
            part.unlink()  # what we have is not a prefix the server recognises
            raise _Incomplete("range not satisfiable; restarting") from None
        raise
    with response:
        length = response.headers.get("Content-Length")
        if response.status == 206:
            start = int(response.headers["Content-Range"].split()[1].split("-")[0])
            if start != have:
                raise _Incomplete(f"server resumed at byte {start}, not {have}")
        else:
            have = 0  # the server ignored Range and sends the whole file
        total = have + int(length) if length is not None else None
        if known_size is not None and total is not None and total != known_size:
            raise _WrongFile(f"offers {total:,} bytes, the published file has {known_size:,}")
        with (
            open(part, "ab" if have else "wb") as f,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                leave=True,
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is None:
        raise _WrongFile("sent no Content-Length, so the file cannot be checked for completeness")
    if size != total:
        raise _Incomplete(f"got {size:,} of {total:,} bytes")

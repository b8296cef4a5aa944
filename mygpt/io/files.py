"""Files safely: written whole or not at all, read only when they are files, cached per user."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mygpt.errors import UserError


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)`, then rename tmp to `path`: it is whole or as it was, never partial.

    tmp is this call's own (created exclusively beside `path`): two processes writing one
    name never write into the same file, and the last rename wins whole.
    """
    path = Path(path)
    tmp, held = None, _hold_signals()
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        _release_signals(held)  # a Ctrl-C or SIGTERM that came meanwhile is raised here
        _as_os_error(write, tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # as open() makes files: mkstemp's are 0600
        os.replace(tmp, path)
    except BaseException:
        _release_signals(held)
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    return path


def _hold_signals() -> object:
    """Hold Ctrl-C and SIGTERM back: one between making a temporary file and the `try` that
    removes it would leave the file behind. _release_signals delivers them."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def _release_signals(held: object) -> None:
    if held is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def write_folder_atomically(folder: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_folder)`, then put it in place of `folder` (replacing one that exists)."""
    folder = Path(folder)
    tmp, held = None, _hold_signals()
    try:
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
        _release_signals(held)  # a Ctrl-C or SIGTERM that came meanwhile is raised here
        old = tmp.with_suffix(".old")  # unique as tmp is
        os.chmod(tmp, 0o777 & ~_umask())
        _as_os_error(write, tmp)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        _release_signals(held)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            old = tmp.with_suffix(".old")
            if old.exists() and not folder.exists():
                os.replace(old, folder)  # put back what was there
        raise
    shutil.rmtree(old, ignore_errors=True)
    return folder


def _as_os_error(write: Callable[[Path], object], tmp: Path) -> None:
    """`write(tmp)`, where a failed write of the file system raises OSError, whatever library
    wrote: torch.save's RuntimeError holds it as its context, safetensors' names its errno."""
    try:
        write(tmp)
    except OSError:
        raise
    except Exception as e:
        if isinstance(e.__context__, OSError):
            raise e.__context__ from e
        if code := re.search(r"\(os error (\d+)\)", str(e)):
            errno = int(code.group(1))
            raise OSError(errno, os.strerror(errno), str(tmp)) from e
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


@contextmanager
def removed_if_left_empty(folder: Path) -> Iterator[None]:
    """Within: `folder` may be made; on leaving, however, it and the parents made for it are
    removed again where nothing was written in them (a run that failed to start)."""
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        yield
    finally:
        for p in made:
            try:
                p.rmdir()
            except OSError:  # not empty, or gone: what is in it stays
                break


def check_new_output(path: Path, force: bool, what: str) -> None:
    """`path` may be written: it does not exist (or `force`), and its folder is or can be made."""
    if path.exists() and not force:
        raise UserError(f"{path}: exists; give --force to replace it")
    if path.exists() and path.is_dir() != (what == "folder"):
        raise UserError(f"{path}: exists and is not a {what}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError):
        raise UserError(f"{path}: a part of its folder is a file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot make its folder ({e.strerror})") from None
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{path}: cannot write in {path.parent}")


_KINDS = {
    stat.S_ISFIFO: "a named pipe",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def special_kind(path: str | Path) -> str | None:
    """ "a named pipe", "a character device", ... for what is neither a regular file nor a
    folder; None for those, and for a path that does not exist."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")


def check_readable(path: str | Path) -> None:
    """A regular file or a folder, or a UserError: a pipe or a device may block or never end.

    A path that does not exist passes: callers say "no such file" in their own words.
    """
    if kind := special_kind(path):
        raise UserError(f"{path}: is {kind}, not a file or a folder")


def cache_dir(variable: str = "MYGPT_CACHE_DIR") -> Path:
    """Where MyGPT keeps what it can make again: $`variable` if set, else ~/.cache/mygpt (or
    $XDG_CACHE_HOME/mygpt)."""
    if os.environ.get(variable):
        return Path(os.environ[variable]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mygpt"

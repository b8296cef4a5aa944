"""Files safely: written whole or not at all, read only when they are files, cached per user."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from .errors import UserError


def write_atomically(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)`, then rename tmp to `path`: it is whole or as it was, never partial."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_folder_atomically(folder: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_folder)`, then put it in place of `folder` (replacing one that exists)."""
    folder = Path(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
    try:
        tmp.mkdir()
        write(tmp)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():
            os.replace(old, folder)  # put back what was there
        raise
    shutil.rmtree(old, ignore_errors=True)
    return folder


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

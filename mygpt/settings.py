"""Settings as dataclass fields: a field's default, flag help and check stand together, once.

`setting(...)` declares a field; `cli.add_settings` turns the fields of a settings dataclass into
argparse flags (the field's name with dashes); `require` is the check a `__post_init__` makes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mygpt.errors import UserError


def setting(
    default: Any,
    help: str | None = None,
    *,
    group: str,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    positive: bool = False,
    repeat: bool = False,
) -> Any:
    """A dataclass field that is also a command-line flag in `group` of --help.

    `positive`: an integer flag of at least 1; `repeat`: a flag given once per item (a tuple).
    """
    meta = {
        "help": help,
        "group": group,
        "metavar": metavar,
        "choices": choices,
        "positive": positive,
        "repeat": repeat,
    }
    return dataclasses.field(default=default, metadata={"flag": meta})


def flag_of(name: str) -> str:
    """The command-line flag of a field: `context_length` is --context-length."""
    return "--" + name.replace("_", "-")


def flag_fields(cls: type) -> Iterator[dataclasses.Field]:
    """The fields of a settings dataclass that are flags, in their order."""
    return (f for f in dataclasses.fields(cls) if "flag" in f.metadata)


def as_paths(settings: object, *names: str) -> None:
    """In a frozen settings __post_init__: text given for a path field becomes a Path."""
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, str):
            object.__setattr__(settings, name, Path(value))


def require(condition: bool, name: str, message: str) -> None:
    """A check in a settings __post_init__: a UserError that names the flag."""
    if not condition:
        raise UserError(f"{flag_of(name)} {message}")


def require_positive(settings: object, *names: str) -> None:
    """Each named field is None or at least 1."""
    for name in names:
        value = getattr(settings, name)
        require(value is None or value >= 1, name, f"must be at least 1, got {value}")


def require_non_negative(settings: object, *names: str) -> None:
    for name in names:
        value = getattr(settings, name)
        require(value is None or value >= 0, name, f"must be >= 0, got {value}")


MAX_SEED = 2**63 - 1  # what torch.manual_seed and NumPy's generators both take


def check_seed(value: int | None) -> None:
    """A seed is None (random) or an integer from 0 to MAX_SEED; else a ValueError."""
    if value is not None and not 0 <= value <= MAX_SEED:
        raise ValueError(f"seed must be from 0 to 2**63 - 1, got {value}")


def require_seed(settings: object, name: str = "seed") -> None:
    try:
        check_seed(getattr(settings, name))
    except ValueError as e:
        raise UserError(f"{flag_of(name)} {str(e).removeprefix('seed ')}") from None

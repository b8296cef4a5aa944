"""What the commands share at their edges: flags from settings, user errors as one line, Ctrl-C
without a traceback."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mygpt.devices import DEVICE_CHOICES, pick_device
from mygpt.errors import Terminated, UserError
from mygpt.io.load import DownloadSettings, load_model
from mygpt.model import GPTModel
from mygpt.settings import flag_fields, flag_of


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def run_main(main: Callable[[], int | None]) -> None:
    """Run a script's main(); a UserError prints one line and exits with its code; Ctrl-C
    and SIGTERM stop it as KeyboardInterrupt (exit 130 and 143)."""
    sys.stdout.reconfigure(line_buffering=True)  # lines appear as they happen, piped or not
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print(f"\n{'Terminated' if terminated else 'Interrupted'}.", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
    sys.exit(code or 0)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help that shows a flag's default only when there is one to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # None and an off switch's False say nothing; a flag's help names its varying default.
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        # "--lr X" and "--epochs N" read better than "--lr LR" and "--epochs EPOCHS".
        kind = {int: "N", positive_int: "N", float: "X", Path: "PATH"}.get(action.type)
        return kind or super()._get_default_metavar_for_optional(action)


def add_settings(
    p: argparse.ArgumentParser,
    cls: type,
    prefix: str = "",
    groups: dict[str, argparse._ArgumentGroup] | None = None,
) -> None:
    """A flag for each field of the settings dataclass `cls` (see settings.setting), in
    `groups` by the field's group, else in `p`. A flag not given stays out of the parsed
    namespace (given_flags), so it can be applied over any base: defaults or a checkpoint's."""
    for f in flag_fields(cls):
        meta = f.metadata["flag"]
        kind = str(f.type).split("|")[0].strip()
        kwargs: dict[str, Any] = {"dest": prefix + f.name, "default": argparse.SUPPRESS}
        if kind == "bool":
            kwargs |= {"action": "store_const", "const": True}
        elif meta["repeat"]:
            kwargs |= {"action": "append"}
        else:
            types = {"int": positive_int if meta["positive"] else int, "float": float, "Path": Path}
            kwargs |= {"type": types.get(kind), "choices": meta["choices"]}
        if meta["metavar"]:
            kwargs["metavar"] = meta["metavar"]
        shown = f.default is not None and f.default is not False and not meta["repeat"]
        default = f"(default: {f.default})" if shown else ""
        kwargs["help"] = " ".join(filter(None, (meta["help"], default))) or None
        target = groups[meta["group"]] if groups is not None else p
        target.add_argument(flag_of(f.name), **kwargs)


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags of add_settings that were given, as {dest: value}; repeated ones as tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()}


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


positive_int.__name__ = "positive integer"  # what argparse names in its error message


def settings_from(cls: type, args: argparse.Namespace, prefix: str = "") -> Any:
    """An instance of the settings dataclass `cls` from the flags add_settings made for it."""
    given = given_flags(args)
    names = {f.name for f in flag_fields(cls)}
    return cls(
        **{
            k[len(prefix) :]: v
            for k, v in given.items()
            if k.startswith(prefix) and k[len(prefix) :] in names
        }
    )


def add_download_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--models-dir, --base-url and --source: where GPT-2 sizes are downloaded from and to."""
    add_settings(p, DownloadSettings)


def download_settings(args: argparse.Namespace) -> DownloadSettings:
    """The flags of add_download_flags."""
    return settings_from(DownloadSettings, args)


MODEL_HELP = (
    "a GPT-2 size (124M, 355M, 774M, 1558M; downloaded once), a checkpoint folder, "
    "or a model.safetensors / checkpoint.pt of MyGPT's"
)


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """MODEL (whatever load_model takes), --device, and the download flags."""
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto: cuda, then cpu")
    add_download_flags(p)


def model_from_flags(args: argparse.Namespace) -> GPTModel:
    """The model that add_model_flags' flags name, on their device."""
    return load_model(args.model, pick_device(args.device), download=download_settings(args))

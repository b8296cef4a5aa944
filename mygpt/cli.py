"""What both scripts share at their edges: user errors as one line, Ctrl-C without a traceback."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .devices import DEVICE_CHOICES, DTYPE_CHOICES
from .errors import UserError
from .pretrained import default_models_dir
from .weights import DownloadSettings


def run_main(main: Callable[[], int | None]) -> None:
    """Run a script's main(); a UserError prints one line and exits with its code."""
    sys.stdout.reconfigure(line_buffering=True)  # lines appear as they happen, piped or not
    try:
        code = main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def banner(title: str) -> str:
    """A title framed by lines of '=', as the scripts print between their stages."""
    line = f"{'=' * 11} {title} {'=' * 11}"
    return "\n".join(("=" * len(line), line, "=" * len(line)))


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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


positive_int.__name__ = "positive integer"  # what argparse names in its error message


def add_device_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--device, --dtype, --compile and --tf32, the same in both scripts."""
    p.add_argument(
        "--device", default="auto", choices=DEVICE_CHOICES, help="auto: cuda, then mps, then cpu"
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPE_CHOICES,
        help="bfloat16: autocast matmuls to bfloat16 (weights stay float32); auto: bfloat16 "
        "where the hardware computes it natively (CUDA with bf16, a CPU with AMX or "
        "AVX512-BF16), else float32",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the model (pays off on long runs)"
    )
    p.add_argument("--tf32", action="store_true", help="TF32 matmuls for float32 on CUDA")


def add_download_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--models-dir, --base-url and --source: where GPT-2 sizes are downloaded from and to."""
    p.add_argument(
        "--models-dir",
        type=Path,
        metavar="DIR",
        help=f"download cache (default: $MYGPT_MODELS_DIR or {default_models_dir()})",
    )
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="download from a server with the same layout: {URL}/{size}/{file} "
        "({URL}/{repo}/resolve/main/{file} with --source hf)",
    )
    p.add_argument(
        "--source",
        default="openai",
        choices=("openai", "hf"),
        help="openai: OpenAI's TensorFlow checkpoint; hf: the Hugging Face hub's safetensors",
    )


def download_settings(args: argparse.Namespace) -> DownloadSettings:
    """The flags of add_download_flags."""
    return DownloadSettings(args.models_dir, args.base_url, args.source)


class GracefulStop:
    """Within `with`: Ctrl-C (or SIGTERM) asks a training loop to stop after its step.

    A second Ctrl-C, a second or more after the first, stops at once (KeyboardInterrupt).
    Signals sent to the whole process group twice at once (terminal and torchrun) count once.
    """

    def __init__(self, message: str = "Stopping after this step (Ctrl-C again to quit now)..."):
        self.message = message
        self.requested_at: float | None = None

    def __call__(self) -> bool:
        return self.requested_at is not None

    def _handle(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.requested_at is None:
            self.requested_at = now
            print(f"\n{self.message}", file=sys.stderr)
        elif signum == signal.SIGINT and now - self.requested_at > 1.0:
            raise KeyboardInterrupt

    def __enter__(self) -> GracefulStop:
        self._previous = {
            s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)
        }
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

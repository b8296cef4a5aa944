"""What both scripts share at their edges: user errors as one line, Ctrl-C without a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from .errors import UserError


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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


positive_int.__name__ = "positive integer"  # what argparse names in its error message

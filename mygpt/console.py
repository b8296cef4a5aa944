"""The terminal's side of long work: the stage banners the book prints, and Ctrl-C or SIGTERM
as a request to stop after the current step."""

from __future__ import annotations

import signal
import sys
import time


def banner(title: str) -> str:
    """A title framed by lines of '=', as the scripts print between their stages."""
    line = f"{'=' * 11} {title} {'=' * 11}"
    return "\n".join(("=" * len(line), line, "=" * len(line)))


class GracefulStop:
    """Within `with`: Ctrl-C (or SIGTERM) asks a training loop to stop after its step.

    A second Ctrl-C, a second or more after the first, stops at once (KeyboardInterrupt).
    Signals sent to the whole process group twice at once (terminal and torchrun) count once.
    """

    def __init__(self, message: str = "Stopping after this step (Ctrl-C again to quit now)..."):
        self.message = message
        self.requested_at: float | None = None
        self.signal: int | None = None  # the first one: SIGTERM then exits 143, not 130

    def __call__(self) -> bool:
        return self.requested_at is not None

    def _handle(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.requested_at is None:
            self.requested_at, self.signal = now, signum
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

"""Time MyGPT_v2_pretrained.py from its start to its first prompt, first run and later runs.

    uv run python bench/v2_startup.py [--shape 12 768 12 1024] [--runs 3]

Writes a random GPT-2 checkpoint of that shape (n_layer n_embd n_head n_ctx; default 124M) in
OpenAI's TF layout, serves it on 127.0.0.1, and runs the script against it with a fresh models
folder: the first run downloads and converts, the later runs load the converted file.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from http_server import FileServer  # noqa: E402

PROMPT = b"> "


def time_to_prompt(args: list[str]) -> float:
    """Seconds from process start until the script prints its first '> ', then end the chat."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "MyGPT_v2_pretrained.py"), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    seen = b""
    while not seen.endswith(PROMPT):
        byte = proc.stdout.read(1)
        if not byte:
            raise RuntimeError(f"the script ended before its prompt: {seen.decode()[-300:]}")
        seen += byte
    elapsed = time.perf_counter() - start
    proc.communicate(b"exit\n", timeout=60)
    return elapsed


def measure(shape: list[int], runs: int = 3) -> tuple[float, list[float]]:
    """Seconds to the first prompt: the first run, and each of `runs` later runs."""
    with tempfile.TemporaryDirectory() as tmp:
        served = Path(tmp) / "served"
        n_layer, n_embd, n_head, n_ctx = shape
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "tests" / "make_tf_checkpoint.py"),
                str(served / "124M"),
                *map(str, (n_layer, n_embd, n_head, n_ctx, 50257, 0)),
            ],
            check=True,
            capture_output=True,
        )
        with FileServer(served) as server:
            flags = ["--models-dir", str(Path(tmp) / "models"), "--base-url", server.url]
            first = time_to_prompt(flags)
            later = [time_to_prompt(flags) for _ in range(runs)]
    return first, later


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shape", nargs=4, type=int, default=[12, 768, 12, 1024])
    p.add_argument("--runs", type=int, default=3, help="later runs to time")
    args = p.parse_args()
    first, later = measure(args.shape, args.runs)
    print(f"shape {args.shape}: first run (download + conversion) {first:.2f} s to the prompt")
    each = ", ".join(f"{t:.2f}" for t in later)
    print(f"later runs: median {statistics.median(later):.2f} s ({each})")


if __name__ == "__main__":
    main()

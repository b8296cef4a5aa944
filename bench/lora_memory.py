"""Peak memory and speed of fine-tuning a GPT-2 size with v1: all weights, or LoRA.

OpenAI's weights cannot be downloaded here, so it first makes a hub-layout folder of random
weights of the size's real shape (cached; converted once, as a user's first run does). Then it
runs MyGPT_v1_local-train.py --init-from that folder for 1 and for 3 steps and reports the
larger peak RSS of the two processes (os.wait4: the whole process, loading and saving included)
and tokens/s = 2 steps x tokens / (time of 3 steps - time of 1 step), which leaves out loading,
the evaluation at step 0, the sample and the saves that both runs share.

Usage: uv run python bench/lora_memory.py 1558M [-- V1 FLAGS...]
       e.g. -- --lora-rank 16 --base-dtype bfloat16 --activation-checkpointing
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from pydoc_text import pydoc_text  # noqa: E402

from mygpt.config import GPT2_SIZES  # noqa: E402
from mygpt.devices import cpu_identity  # noqa: E402
from mygpt.io.files import cache_dir  # noqa: E402

COMMON = shlex.split(
    "--context-length 1024 --batch-size 1 --eval-freq 1000 --eval-iter 1 "
    "--sample-tokens 10 --lr 1e-4"
)


def make_random_hub_folder(size: str, folder: Path) -> None:
    """config.json and model.safetensors of GPT-2 `size`'s shape, N(0, 0.02) weights."""
    from safetensors.numpy import save_file

    d, n_layers, n_heads = GPT2_SIZES[size]
    rng = np.random.default_rng(0)

    def normal(*shape: int) -> np.ndarray:
        return 0.02 * rng.standard_normal(shape, dtype=np.float32)

    tensors = {"wte.weight": normal(50257, d), "wpe.weight": normal(1024, d)}
    for i in range(n_layers):
        h = f"h.{i}."
        for name, shape in (
            ("attn.c_attn", (d, 3 * d)),
            ("attn.c_proj", (d, d)),
            ("mlp.c_fc", (d, 4 * d)),
            ("mlp.c_proj", (4 * d, d)),
        ):
            tensors[h + name + ".weight"], tensors[h + name + ".bias"] = (
                normal(*shape),
                normal(shape[1]),
            )
        for norm in ("ln_1", "ln_2"):
            tensors[h + norm + ".weight"] = 1 + normal(d)
            tensors[h + norm + ".bias"] = normal(d)
    tensors["ln_f.weight"], tensors["ln_f.bias"] = 1 + normal(d), normal(d)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "model.safetensors")
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": 50257,
        "n_positions": 1024,
        "n_ctx": 1024,
        "n_embd": d,
        "n_layer": n_layers,
        "n_head": n_heads,
        "tie_word_embeddings": True,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def random_folder(size: str) -> Path:
    """The cached folder of `size`, made and converted in a child process (its memory is freed)."""
    folder = cache_dir() / "bench" / f"random-gpt2-{size}"
    if not (folder / "mygpt.safetensors").is_file():
        code = (
            f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(Path(__file__).parent)!r}]; "
            "from lora_memory import make_random_hub_folder; from mygpt import load_gpt2; "
            f"from pathlib import Path; f = Path({str(folder)!r}); "
            f"make_random_hub_folder({size!r}, f); load_gpt2(f)"
        )
        subprocess.run([sys.executable, "-c", code], check=True)
    return folder


def run_v1(args: list[str]) -> tuple[int, float, int, str, str]:
    """(exit status, seconds, peak RSS in bytes, stdout, stderr) of one v1 process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "MyGPT_v1_local-train.py"), *args],
            stdout=out,
            stderr=err,
            cwd=ROOT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        return proc.returncode, seconds, usage.ru_maxrss * 1024, out.read(), err.read()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("size", choices=GPT2_SIZES)
    p.add_argument("flags", nargs="*", help="v1 flags after --")
    args = p.parse_args()
    folder = random_folder(args.size)
    data = cache_dir() / "bench" / "pydoc.txt"
    if not data.is_file():
        data.write_text(pydoc_text())
    runs = {}
    for steps in (1, 3):
        with tempfile.TemporaryDirectory(dir=cache_dir() / "bench") as out:
            flags = [
                "--init-from",
                str(folder),
                "--data",
                str(data),
                *COMMON,
                *args.flags,
                "--max-steps",
                str(steps),
                "--output-dir",
                out,
            ]
            code, seconds, rss, stdout, stderr = run_v1(flags)
            sizes = {f.name: f.stat().st_size for f in Path(out).iterdir() if f.is_file()}
        if code != 0:
            refused = {
                "size": args.size,
                "flags": args.flags,
                "exit": code,
                "stderr": stderr.strip().splitlines()[-1:],
                "seconds": round(seconds, 1),
                "peak_rss_gb": round(rss / 1e9, 2),
            }
            print(json.dumps(refused))
            return
        runs[steps] = (seconds, rss, sizes, stdout)
    (t1, rss1, _, _), (t3, rss3, sizes, stdout) = runs[1], runs[3]
    tokens = 2 * 1024
    listing = [line for line in stdout.splitlines() if line.startswith(("(", "LoRA rank"))]
    print(
        json.dumps(
            {
                "size": args.size,
                "flags": args.flags,
                "cpu": cpu_identity()[0],
                "peak_rss_gb": round(max(rss1, rss3) / 1e9, 2),
                "seconds_1_step": round(t1, 1),
                "seconds_3_steps": round(t3, 1),
                "tokens_per_s": round(tokens / (t3 - t1), 1),
                "files_mb": {k: round(v / 1e6, 2) for k, v in sorted(sizes.items())},
                "listing": listing,
            }
        )
    )


if __name__ == "__main__":
    main()

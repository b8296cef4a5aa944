"""What each GGUF outtype costs: file size and llama.cpp's perplexity, beside f32; and whether
llama.cpp's greedy text equals MyGPT's float32 text for the same prompt.

    uv run python bench/export_outtypes.py SOURCE TEXT [--prompt P] [--context N]

SOURCE is anything --init-from takes; TEXT is held-out text to score. Builds llama.cpp once
(bench/llamacpp.py) if this machine has no build yet.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import llamacpp  # noqa: E402 (bench/ is not a package)

from mygpt import export_gguf, generate, get_tokenizer, load_weights  # noqa: E402
from mygpt.export import OUTTYPES  # noqa: E402


def llama(tools: Path, tool: str, *args) -> subprocess.CompletedProcess:
    cmd = [str(tools / tool), "-t", "2", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("source")
    p.add_argument("text", type=Path)
    p.add_argument("--prompt", default="Every effort moves you")
    p.add_argument("--new-tokens", type=int, default=40)
    p.add_argument("--context", type=int, default=128, help="llama-perplexity's chunk length")
    args = p.parse_args()
    tools = llamacpp.build(log=lambda s: print(s, file=sys.stderr))
    model, where = load_weights(args.source, log=lambda s: print(s, file=sys.stderr))
    tok = get_tokenizer()
    print(f"model: {where}, {model.num_parameters():,} parameters; text: {args.text}")
    ids = generate(model, torch.tensor([tok.encode(args.prompt)]), args.new_tokens)[0].tolist()
    ours = tok.decode(ids)
    print(f"MyGPT float32 greedy:  {ours!r}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for outtype in OUTTYPES:
            path = export_gguf(model, Path(tmp) / f"m-{outtype}.gguf", outtype)
            out = llama(tools, "llama-perplexity", "-m", path, "-f", args.text, "-c", args.context)
            ppl = float(re.search(r"Final estimate: PPL = ([\d.]+)", out.stderr)[1])
            text = llama(
                tools,
                "llama-completion",
                "-m",
                path,
                "-p",
                args.prompt,
                "-n",
                args.new_tokens,
                "--temp",
                "0",
                "-no-cnv",
                "--no-warmup",
                "--simple-io",
            ).stdout.removesuffix("\n\n")
            rows.append((outtype, path.stat().st_size / 1e6, ppl, text == ours))
            if outtype == "f32":
                print(f"llama.cpp f32 greedy:  {text!r}")
    f32 = rows[0][2]
    print("\n| outtype | file (MB) | llama.cpp perplexity | vs f32 | greedy text = MyGPT's |")
    print("| --- | --- | --- | --- | --- |")
    for outtype, mb, ppl, same in rows:
        print(
            f"| {outtype} | {mb:,.1f} | {ppl:.4f} | {100 * (ppl / f32 - 1):+.3f}% | "
            f"{'yes' if same else 'no'} |"
        )


if __name__ == "__main__":
    main()

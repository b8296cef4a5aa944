"""Export a model to the Hugging Face layout (transformers) or to GGUF (llama.cpp, ollama).

SOURCE is anything v1's --init-from takes: a GPT-2 size (downloaded and cached), a checkpoint
folder (OpenAI's or the hub's layout), or v1's model.safetensors / checkpoint.pt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mygpt.cli.common import HelpFormatter, add_download_flags, download_settings, run_main
from mygpt.errors import UserError
from mygpt.export.gguf_file import OUTTYPES, export_gguf
from mygpt.export.hf import export_hf
from mygpt.io.files import check_new_output
from mygpt.io.load import load_model

EXAMPLES = """examples:
  mygpt export runs/verdict/model.safetensors --to hf exported/verdict
  mygpt export 124M --to gguf gpt2-124M-q8_0.gguf --outtype q8_0"""


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=prog or "python -m mygpt.export",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=type(
            "Formatter", (HelpFormatter, argparse.RawDescriptionHelpFormatter), {}
        ),
    )
    p.add_argument("weights", metavar="SOURCE", help="GPT-2 size, checkpoint folder or v1 file")
    p.add_argument(
        "--to",
        required=True,
        choices=("hf", "gguf"),
        help="hf: a folder for transformers' from_pretrained; gguf: one file for llama.cpp "
        "and ollama, with an ollama Modelfile beside it (OUT with the suffix .Modelfile)",
    )
    p.add_argument("out", metavar="OUT", type=Path, help="the folder (hf) or .gguf file to write")
    p.add_argument(
        "--outtype",
        choices=list(OUTTYPES),
        help="GGUF weights (default: f16): f32 exact; f16 and bf16 half the size; q8_0 "
        "llama.cpp's 8-bit blocks, a quarter; norms, biases and positions stay f32",
    )
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    add_download_flags(p)
    args = p.parse_args(argv)
    if args.outtype and args.to == "hf":
        p.error("--outtype is for --to gguf (the hf folder holds float32 weights)")
    args.outtype = args.outtype or "f16"
    return args


def _log(line: str) -> None:
    print(line.rstrip("\n"), file=sys.stderr)


def _size(path: Path) -> str:
    files = [path] if path.is_file() else [f for f in path.iterdir() if f.is_file()]
    return f"{sum(f.stat().st_size for f in files) / 1e6:,.1f} MB"


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`mygpt export` and python -m mygpt.export: load weights, write an HF folder or GGUF."""
    args = parse_args(argv, prog)
    outputs = [args.out] if args.to == "hf" else [args.out, args.out.with_suffix(".Modelfile")]
    source = Path(args.weights).resolve()
    for out in outputs:  # before loading: a download must not come before a refusal
        if Path(args.weights).exists() and out.resolve() in (source, *source.parents):
            raise UserError(f"{out}: is or holds SOURCE {args.weights}; write the export elsewhere")
        check_new_output(out, args.force, "folder" if args.to == "hf" else "file")
    model = load_model(args.weights, download=download_settings(args), log=_log)
    _log(f"Loaded {model.origin} ({model.num_parameters():,} parameters)")
    _log(f"Writing {args.out} ({args.to}{'' if args.to == 'hf' else ', ' + args.outtype})...")
    try:
        if args.to == "hf":
            export_hf(model, args.out)
        else:
            export_gguf(model, args.out, args.outtype, progress=sys.stderr.isatty())
    except OSError as e:
        raise UserError(
            f"{args.out}: could not be written ({e.strerror or e}); nothing written"
        ) from None
    kind = "Hugging Face folder" if args.to == "hf" else f"GGUF ({args.outtype})"
    print(f"Wrote {args.out}: {kind}, {_size(args.out)}")


if __name__ == "__main__":
    run_main(main)

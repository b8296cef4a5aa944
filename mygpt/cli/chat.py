"""Complete your sentences with OpenAI's GPT-2, loaded into MyGPT's from-scratch model."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from mygpt.cli.common import (
    HelpFormatter,
    add_download_flags,
    add_settings,
    download_settings,
    run_main,
    settings_from,
)
from mygpt.config import GPT2_SIZES
from mygpt.console import banner
from mygpt.devices import DeviceSettings, allow_tf32, make_autocast, pick_device
from mygpt.inference.chat import ChatOptions, chat
from mygpt.inference.fast import compile_for_generation
from mygpt.inference.precision import for_inference
from mygpt.io.gpt2 import default_models_dir
from mygpt.io.load import load_model


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--model",
        metavar="SOURCE",
        help="the weights, as v1's --init-from takes them: a GPT-2 size (124M, 355M, 774M, "
        "1558M; downloaded once), a checkpoint folder (OpenAI's or the hub's layout), or a "
        "model.safetensors / checkpoint.pt trained by MyGPT_v1_local-train.py (default: 124M)",
    )
    source.add_argument("--model-size", choices=list(GPT2_SIZES), help="--model SIZE")
    source.add_argument("--checkpoint-dir", type=Path, help="--model FOLDER (must be a folder)")
    source.add_argument("--checkpoint", type=Path, help="--model FILE (must be v1's file)")
    add_download_flags(p)
    add_settings(p, ChatOptions)
    add_settings(p, DeviceSettings)
    return p.parse_args(argv)


def weights_source(args: argparse.Namespace) -> tuple[str | Path, str]:
    """What --model (or its older spellings) names, and what it must be."""
    if args.checkpoint_dir:
        return args.checkpoint_dir, "folder"
    if args.checkpoint:
        return args.checkpoint, "file"
    return args.model or args.model_size or "124M", "any"


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`mygpt chat` and MyGPT_v2_pretrained.py: load weights, then complete prompts."""
    args = parse_args(argv, prog)
    # Prompts are text; a stray byte from a terminal or a pipe must not end the chat.
    sys.stdin.reconfigure(errors="replace")
    run_on, options = settings_from(DeviceSettings, args), settings_from(ChatOptions, args)
    device = pick_device(run_on.device)
    allow_tf32(run_on.tf32)
    print(banner("PRETRAINED GPT MODEL"))
    print()
    source, expect = weights_source(args)
    download = download_settings(args)
    model = load_model(source, device, download=download, expect=expect)
    if model.origin == str(source) and Path(source).is_file():  # a model of v1's: say which
        print(f"Loaded {source} ({model.num_parameters():,} parameters)\n")
    template, tokenizer = model.template, model.tokenizer
    model = for_inference(model, options.precision, log=print)
    if options.precision != "float32":
        auto = " (auto)" if options.precision == "auto" else ""
        print(f"Precision: {model.precision} weights{auto}\n")
    if run_on.compile:
        model = compile_for_generation(model, log=lambda s: print(f"{s.capitalize()}\n"))
    settings = replace(options.settings(tokenizer.eot_token), template=options.template or template)
    history = (download.models_dir or default_models_dir()) / "chat-history"
    with make_autocast(device, run_on.dtype)():
        chat(model, tokenizer, settings, history_file=history)


if __name__ == "__main__":
    run_main(main)

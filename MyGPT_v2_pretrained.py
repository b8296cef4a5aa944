"""Complete your sentences with OpenAI's GPT-2, loaded into MyGPT's from-scratch model."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from mygpt import Sampling, get_tokenizer, gpt2_folder, load_gpt2, load_trained_model
from mygpt.chat import CHAT_SAMPLING, ChatSettings, chat
from mygpt.cli import (
    HelpFormatter,
    add_device_flags,
    add_download_flags,
    banner,
    download_settings,
    positive_int,
    run_main,
)
from mygpt.config import GPT2_SIZES
from mygpt.devices import allow_tf32, make_autocast, pick_device
from mygpt.precision import PRECISIONS, auto_precision, for_inference
from mygpt.pretrained import default_models_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model-size", default="124M", choices=list(GPT2_SIZES), help="GPT-2 size")
    p.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="load this local folder in OpenAI's (or the hub's) layout; no download",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="complete with a model trained by MyGPT_v1_local-train.py "
        "(its model.safetensors or checkpoint.pt); no download",
    )
    add_download_flags(p)
    defaults = CHAT_SAMPLING
    p.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=defaults.max_new_tokens,
        help="completion length",
    )
    p.add_argument("--temperature", type=float, default=defaults.temperature, help="0 is greedy")
    p.add_argument(
        "--top-k",
        type=positive_int,
        default=defaults.top_k,
        help="sample among the N likeliest tokens",
    )
    p.add_argument(
        "--top-p",
        type=float,
        help="nucleus sampling: among the fewest tokens whose probability reaches X",
    )
    p.add_argument(
        "--repetition-penalty",
        type=float,
        default=defaults.repetition_penalty,
        help="transformers' rule: a seen token's logit is divided by X if positive, multiplied "
        "if negative; 1 is off",
    )
    p.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="end a completion where its text contains TEXT (repeatable)",
    )
    p.add_argument("--seed", type=int, help="same seed, same completions (default: random)")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="after each completion, a dim line: tokens, seconds, tokens/s",
    )
    p.add_argument(
        "--precision",
        default="float32",
        choices=PRECISIONS,
        help="weights for generation: bfloat16, int8 (Linear layers and the head), or auto "
        "(int8 on a CPU with the kernel, bfloat16 on a CUDA GPU with bf16); float32 is exact",
    )
    add_device_flags(p)
    args = p.parse_args(argv)
    if args.checkpoint and args.checkpoint_dir:
        p.error("--checkpoint and --checkpoint-dir: give one of them")
    try:
        args.sampling = sampling_of(args)
    except ValueError as e:  # Sampling's own checks, in the flags' words
        p.error("--" + str(e).replace("_", "-"))
    return args


def sampling_of(args: argparse.Namespace) -> Sampling:
    """The sampling flags; the chat ends a completion at GPT-2's <|endoftext|>."""
    return replace(
        CHAT_SAMPLING,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        stop=tuple(args.stop),
    )


def main() -> None:
    args = parse_args()
    # Prompts are text; a stray byte from a terminal or a pipe must not end the chat.
    sys.stdin.reconfigure(errors="replace")
    device = pick_device(args.device)
    allow_tf32(args.tf32)
    autocast = make_autocast(device, args.dtype)
    print(banner("PRETRAINED GPT MODEL"))
    print()
    if args.checkpoint:
        model = load_trained_model(args.checkpoint, device)
        print(f"Loaded {args.checkpoint} ({model.num_parameters():,} parameters)\n")
    else:
        folder = args.checkpoint_dir or gpt2_folder(args.model_size, download_settings(args))
        model = load_gpt2(folder, device)
    if args.precision != "float32":
        chosen = auto_precision(device) if args.precision == "auto" else args.precision
        model = for_inference(model, chosen)
        print(
            f"Precision: {chosen} weights" + (" (auto)" if args.precision == "auto" else "") + "\n"
        )
    if args.compile:
        model = torch.compile(model, dynamic=True)  # prompts and the cache change lengths
    settings = ChatSettings(args.sampling, args.seed, args.verbose)
    history = (args.models_dir or default_models_dir()) / "chat-history"
    with autocast():
        chat(model, get_tokenizer(), settings, history_file=history)


if __name__ == "__main__":
    run_main(main)

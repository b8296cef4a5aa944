"""The `mygpt` command: one subcommand per program, each with the flags it has always had."""

from __future__ import annotations

import importlib
import sys

from mygpt.cli.common import run_main

# name -> (module under mygpt.cli with main(argv, prog), the line `mygpt --help` shows)
COMMANDS = {
    "train": ("train", "train a model on your text, fine-tune one, or score it (= v1)"),
    "chat": ("chat", "complete prompts with GPT-2 or a model of yours (= v2)"),
    "generate": ("generate", "complete a file of prompts, many at once (JSON Lines in and out)"),
    "serve": ("serve", "serve a model with OpenAI's API and a web page to try it"),
    "eval": ("eval", "score a model: HellaSwag, LAMBADA, WikiText, a text, or judged responses"),
    "tokenizer": ("tokenizer", "train a tokenizer on your text: byte-level BPE, or characters"),
    "export": ("export", "write a model as a Hugging Face folder or a GGUF file"),
}

USAGE = "usage: mygpt COMMAND [flags]   (mygpt COMMAND --help: the command's flags)"


def overview() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {line}" for name, (_, line) in COMMANDS.items()]
    return "\n".join([USAGE, "", "GPT-2 from scratch in PyTorch.", "", "commands:", *lines])


def main(argv: list[str] | None = None) -> int | None:
    """Run `mygpt COMMAND ...`: the command's own main with the rest of the arguments."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(overview())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        choices = ", ".join(COMMANDS)
        print(
            f"{USAGE}\nmygpt: error: unknown command {name!r} (choose from {choices})",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(f"mygpt.cli.{COMMANDS[name][0]}")
    return module.main(rest, prog=f"mygpt {name}")


def run() -> None:
    """The console script's entry point."""
    run_main(main)

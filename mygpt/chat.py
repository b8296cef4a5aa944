"""The interactive completion loop of MyGPT_v2_pretrained.py: read prompts, stream completions."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TextIO

import tiktoken
import torch

from .generate import Sampling, stream_text
from .model import GPTModel

EXIT_WORDS = ("exit", "quit")


def prompts(lines: Iterable[str]) -> Iterator[str]:
    """Non-empty prompts from input lines, until an exit word or the end of input."""
    for line in lines:
        prompt = line.strip()
        if prompt.lower() in EXIT_WORDS:
            return
        if prompt:
            yield prompt


def read_lines(prompt: str = "> ", stdin: TextIO | None = None) -> Iterator[str]:
    """Lines typed after `prompt`; ends at end of input (Ctrl-D or the end of a pipe).

    Piped lines are echoed, so a scripted session reads like a typed one.
    """
    stdin = stdin or sys.stdin
    echo = not stdin.isatty()
    while True:
        print(prompt, end="", flush=True)
        line = stdin.readline()
        if not line:
            print()
            return
        if echo:
            print(line.rstrip("\n"))
        yield line


def chat(
    model: GPTModel,
    tokenizer: tiktoken.Encoding,
    sampling: Sampling,
    generator: torch.Generator | None = None,
    stdin: TextIO | None = None,
) -> None:
    """Ask for sentences and print each one completed, streamed token by token.

    Ends at an exit word, at the end of input, or at Ctrl-C: all of them a normal way to leave.
    """
    try:  # from the first line on: Ctrl-C right after it must not be a traceback either
        print("MyGPT: Please enter a sentence to complete (enter 'exit' to end chat)")
        for prompt in prompts(read_lines(stdin=stdin)):
            print(f"MyGPT: {prompt}", end="", flush=True)
            for piece in stream_text(model, tokenizer, prompt, sampling, generator):
                print(piece, end="", flush=True)
            print()
    except KeyboardInterrupt:
        print()

"""The interactive completion loop of MyGPT_v2_pretrained.py: read prompts, stream completions.

On a terminal, prompts are read with line editing and a history kept across runs; Ctrl-C stops
a completion and returns to the prompt. Lines starting with "/" are commands (/help).
Piped input is echoed, so a scripted session reads like a typed one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import tiktoken
import torch

from mygpt.data.instruct import TEMPLATES, alpaca_prompt
from mygpt.errors import Terminated
from mygpt.inference.generate import Sampling, stream_text
from mygpt.inference.options import GenerationOptions, alpaca_sampling
from mygpt.model import GPTModel
from mygpt.settings import check_seed, setting

CHAT = "chat"  # the group of v2's flags


EXIT_WORDS = ("exit", "quit")
HEADER = "MyGPT: Please enter a sentence to complete (enter 'exit' to end chat)"
HISTORY_LENGTH = 1000  # lines kept in the history file
HELP = """\
Commands:
  /set NAME VALUE  change a setting: temperature, top_k, top_p, max_new_tokens,
                   repetition_penalty, seed, verbose ('none' clears top_k, top_p, seed),
                   template (alpaca: each line is an instruction; none: text to complete)
  /show            the current settings
  /help            this text
  /exit            end the chat (so do 'exit', 'quit', Ctrl-D, and Ctrl-C at the prompt)
Ctrl-C during a completion stops it. To complete text that starts with '/', type '//'."""


@dataclass
class ChatSettings:
    """What /set changes: the sampling, the random seed and the timing line."""

    sampling: Sampling
    seed: int | None = None  # None: a different completion each time
    verbose: bool = False  # a timing line after each completion
    template: str = "none"  # "alpaca": wrap each line in the book's prompt, print the response


@dataclass(frozen=True)
class ChatOptions(GenerationOptions):
    """v2's flags for the chat: generation's, and the timing line."""

    verbose: bool = setting(
        False, "after each completion, a dim line: tokens, seconds, tokens/s", group=CHAT
    )

    def settings(self, eos_id: int) -> ChatSettings:
        """What the chat starts with; a completion ends at `eos_id` (<|endoftext|>)."""
        sampling = self.sampling(eos_id)
        return ChatSettings(sampling, self.seed, self.verbose, self.template or "none")


def _parse_optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "off") else kind(text)

    return parse


def _parse_bool(text: str) -> bool:
    if text.lower() in ("on", "true", "yes", "1"):
        return True
    if text.lower() in ("off", "false", "no", "0"):
        return False
    raise ValueError(f"expected on or off, got {text!r}")


# /set NAME VALUE: how each value is read. Sampling checks the ranges itself.
SETTINGS = {
    "temperature": float,
    "top_k": _parse_optional(int),
    "top_p": _parse_optional(float),
    "max_new_tokens": int,
    "repetition_penalty": float,
    "seed": _parse_optional(int),
    "verbose": _parse_bool,
    "template": str,
}


def apply_setting(settings: ChatSettings, name: str, text: str) -> ChatSettings:
    """Settings with NAME set to the value in `text`; ValueError says what is wrong."""
    if name not in SETTINGS:
        raise ValueError(f"unknown setting {name!r}; settings: {', '.join(SETTINGS)}")
    try:
        value = SETTINGS[name](text)
    except ValueError:
        raise ValueError(f"{name}: not a valid value: {text!r}") from None
    if name == "max_new_tokens" and value < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {value}")
    if name == "seed":
        check_seed(value)
    if name == "template" and value not in TEMPLATES:
        raise ValueError(f"template: one of {', '.join(TEMPLATES)}, not {value!r}")
    if name in ("seed", "verbose", "template"):
        return replace(settings, **{name: value})
    return replace(settings, sampling=replace(settings.sampling, **{name: value}))


def show_settings(settings: ChatSettings) -> str:
    sampling = settings.sampling
    values = {
        "temperature": sampling.temperature,
        "top_k": sampling.top_k,
        "top_p": sampling.top_p,
        "max_new_tokens": sampling.max_new_tokens,
        "repetition_penalty": sampling.repetition_penalty,
        "seed": settings.seed,
        "verbose": "on" if settings.verbose else "off",
        "stop": ", ".join(repr(t) for t in sampling.stop) or None,
        "template": settings.template,
    }
    return "\n".join(f"  {k}: {'none' if v is None else v}" for k, v in values.items())


def prompts(lines: Iterable[str]) -> Iterator[str]:
    """Non-empty prompts from input lines, until an exit word or the end of input."""
    for line in lines:
        prompt = line.strip()
        if prompt.lower() in EXIT_WORDS:
            return
        if prompt:
            yield prompt


def piped_lines(prompt: str, stdin: TextIO) -> Iterator[str]:
    """Lines of a pipe or file, each echoed after `prompt`, until the end of input."""
    while True:
        print(prompt, end="", flush=True)
        line = stdin.readline()
        if not line:
            print()
            return
        print(line.rstrip("\n"))
        yield line


def terminal_lines(prompt: str, history_file: Path | None) -> Iterator[str]:
    """Lines typed at `prompt` with line editing and history where the platform has readline.

    Ctrl-D or Ctrl-C at the prompt ends the input.
    """
    try:
        import readline
    except ImportError:  # e.g. Windows: plain input() still works
        readline = None
    if readline and history_file:
        readline.set_history_length(HISTORY_LENGTH)
        with suppress(OSError):  # no history yet
            readline.read_history_file(history_file)
    try:
        while True:
            try:
                line = input(prompt)
            except Terminated:
                raise
            except (KeyboardInterrupt, EOFError):
                print()
                return
            yield line + "\n"
    finally:
        if readline and history_file:
            try:  # a read-only cache costs the history, not the chat
                history_file.parent.mkdir(parents=True, exist_ok=True)
                readline.write_history_file(history_file)
            except OSError as e:
                print(
                    f"warning: the chat history was not saved to {history_file} ({e.strerror})",
                    file=sys.stderr,
                )


def chat(
    model: GPTModel,
    tokenizer: tiktoken.Encoding,
    settings: ChatSettings,
    stdin: TextIO | None = None,
    history_file: Path | None = None,
) -> None:
    """Ask for sentences and print each one completed, streamed token by token.

    Ends at an exit word or /exit, at the end of input, or at Ctrl-C at the prompt: all of
    them a normal way to leave. `history_file` keeps a terminal's prompts across runs.
    """
    stdin = stdin or sys.stdin
    device = next(model.parameters()).device
    generator = _generator(settings.seed, device)
    try:  # from the first line on: Ctrl-C right after it must not be a traceback either
        print(HEADER)
        lines = terminal_lines("> ", history_file) if stdin.isatty() else piped_lines("> ", stdin)
        for prompt in prompts(lines):
            if prompt.startswith("/") and not prompt.startswith("//"):
                new = _command(prompt, settings)
                if new is None:
                    return
                if new.seed != settings.seed:
                    generator = _generator(new.seed, device)
                settings = new
                continue
            prompt = prompt.removeprefix("/")  # "//text" completes "/text"
            text, sampling = wrapped(prompt, settings)
            shown = "" if settings.template == "alpaca" else prompt  # only the response
            print(f"MyGPT: {shown}", end="", flush=True)
            start = time.perf_counter()
            try:
                pieces = stream_text(model, tokenizer, text, sampling, generator)
                n_tokens = _print_pieces(pieces)
            except Terminated:
                raise
            except KeyboardInterrupt:  # stop this completion, keep the chat
                print()
                continue
            print()
            if settings.verbose:
                _timing_line(n_tokens, time.perf_counter() - start)
    except Terminated:
        raise
    except KeyboardInterrupt:
        print()


def wrapped(line: str, settings: ChatSettings) -> tuple[str, Sampling]:
    """The text to complete for a typed line, and the sampling: with the alpaca template the
    line is an instruction, and a response ends at the next "###" as at <|endoftext|>."""
    if settings.template != "alpaca":
        return line, settings.sampling
    return alpaca_prompt({"instruction": line.strip()}), alpaca_sampling(settings.sampling)


def _print_pieces(pieces: Generator[str, None, int]) -> int:
    """Print text pieces as they come; the number of tokens the generator reports."""
    while True:
        try:
            print(next(pieces), end="", flush=True)
        except StopIteration as end:
            return end.value


def _command(line: str, settings: ChatSettings) -> ChatSettings | None:
    """Run a /command: the settings after it, or None to end the chat."""
    name, *args = line[1:].split() or [""]
    if name == "exit":
        return None
    if name == "help":
        print(HELP)
    elif name == "show":
        print(show_settings(settings))
    elif name == "set" and len(args) == 2:
        try:
            settings = apply_setting(settings, args[0], args[1])
            print(f"  {args[0]} = {args[1]}")
        except ValueError as e:
            print(f"error: {e}")
    elif name == "set":
        print("error: usage: /set NAME VALUE (see /help)")
    else:
        print(f"error: unknown command /{name} (see /help; '//' completes text starting with '/')")
    return settings


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


def _timing_line(n_tokens: int, seconds: float) -> None:
    text = f"[{n_tokens} tokens, {seconds:.2f} s, {n_tokens / seconds:.1f} tokens/s]"
    print(f"\x1b[2m{text}\x1b[0m" if sys.stdout.isatty() else text)

"""What a run reads, behind one interface: text (token windows) or instruction records
(padded batches). A run asks it for batches, a sample prompt, a score and its template, and
never asks which of the two it holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import tiktoken

from mygpt.config import GPTConfig
from mygpt.data.corpus import Corpus, load_corpus, load_tokens
from mygpt.data.instruct import (
    RESPONSE,
    InstructionBatches,
    format_input,
    is_instruction_file,
    load_instructions,
    score_responses,
    split_instructions,
)
from mygpt.data.windows import TokenWindows
from mygpt.errors import DataError, UserError
from mygpt.evaluation.score import TextScore, score_tokens
from mygpt.model import GPTModel
from mygpt.training.run_config import RunConfig

Batches = TokenWindows | InstructionBatches  # both: len(), batch(rows), tokens, stride


class RunData(Protocol):
    """--data as a run uses it, whichever kind it is."""

    template: str | None  # the prompt template a model trained on it records

    def batches(self, config: RunConfig, cfg: GPTConfig, global_batch: int) -> tuple[Batches, ...]:
        """Training and validation batches for the model's context."""

    def sample_prompt(self, start_context: str) -> str:
        """What the samples printed during training complete."""

    def score(self, model: GPTModel, batch_size: int, autocast: Callable) -> TextScore:
        """--eval-only: the model's loss on all of it."""


@dataclass
class TextData:
    """Text: token windows over the tokens (split for training, whole for scoring)."""

    path: Path
    corpus: Corpus | None = None
    tokens: np.ndarray | None = None
    template = None

    def batches(self, config: RunConfig, cfg: GPTConfig, global_batch: int):
        stride = config.data.stride or cfg.context_length
        try:
            return self.corpus.windows(cfg.context_length, stride, global_batch)
        except DataError as e:  # too short: name the data
            raise DataError(f"{self.path}: {e}") from None

    def sample_prompt(self, start_context: str) -> str:
        return start_context

    def score(self, model: GPTModel, batch_size: int, autocast: Callable) -> TextScore:
        return score_tokens(model, self.tokens, batch_size=batch_size, autocast=autocast)


@dataclass
class InstructionData:
    """Instruction records (the book's chapter 7): training and validation records, or all."""

    train: list[dict]
    val: list[dict]
    tokenizer: tiktoken.Encoding
    template = "alpaca"

    def batches(self, config: RunConfig, cfg: GPTConfig, global_batch: int):
        length = min(config.data.max_length or cfg.context_length, cfg.context_length)
        return tuple(
            InstructionBatches.of(records, self.tokenizer, length, config.data.mask_prompt)
            for records in (self.train, self.val)
        )

    def sample_prompt(self, start_context: str) -> str:
        return format_input(self.val[0]) + RESPONSE  # the first validation instruction

    def score(self, model: GPTModel, batch_size: int, autocast: Callable) -> TextScore:
        device = next(model.parameters()).device
        with autocast():
            return score_responses(model, self.train + self.val, self.tokenizer, device)


def load_run_data(
    config: RunConfig, tokenizer: tiktoken.Encoding, log: Callable, split: bool
) -> RunData:
    """--data, split into training and validation parts (`split`) or whole (to score)."""
    data = config.data
    if is_instruction_file(data.data):
        records = load_instructions(data.data)
        if not split:
            return InstructionData(records, [], tokenizer)
        parts = split_instructions(records, data.share(True), config.train.seed)
        return InstructionData(*parts, tokenizer)
    given = [
        flag
        for flag, value in (("--mask-prompt", data.mask_prompt), ("--max-length", data.max_length))
        if value
    ]
    if given:
        raise UserError(f"{given[0]} is for instruction data; {data.data} is text to train on")
    memmap, field = data.memmap or None, data.text_field
    if not split:
        tokens = load_tokens(data.data, tokenizer, memmap, log, field)
        if len(tokens) < 2:  # before a model is loaded or downloaded
            raise DataError(f"{data.data}: too short: {len(tokens)} token, scoring needs 2")
        return TextData(data.data, tokens=tokens)
    corpus = load_corpus(data.data, tokenizer, data.share(False), memmap, log, field)
    return TextData(data.data, corpus=corpus)

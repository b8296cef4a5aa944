"""Scoring a model on a text: mean next-token loss and perplexity, exact and deterministic."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TextScore:
    """Mean cross-entropy over `n_tokens` predicted tokens, and its perplexity; with the text's
    size in bytes and words, bits per byte and word perplexity (the harness's names)."""

    loss: float
    n_tokens: int
    n_bytes: int | None = None
    n_words: int | None = None

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def bits_per_byte(self) -> float | None:
        """Total bits over the text's UTF-8 bytes: comparable across tokenizers."""
        if not self.n_bytes:
            return None
        return self.loss * self.n_tokens / math.log(2) / self.n_bytes

    @property
    def word_perplexity(self) -> float | None:
        """exp(total loss / words): the GPT-2 paper's unit for WikiText."""
        if not self.n_words:
            return None
        return math.exp(self.loss * self.n_tokens / self.n_words)

    def __str__(self) -> str:
        return f"Loss {self.loss:.4f}, perplexity {self.perplexity:.2f} over {self.n_tokens} tokens"


@torch.no_grad()
def score_tokens(
    model: nn.Module,
    tokens: np.ndarray | torch.Tensor | list[int],
    context_length: int | None = None,
    batch_size: int = 8,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    stride: int | None = None,
) -> TextScore:
    """Score every token after the first, in windows of `context_length` (default: the
    model's) that start `stride` tokens apart (default: the window, so none overlap).

    A token is scored once, in the first window that predicts it: with a stride shorter than
    the window, all but the first window score only their last `stride` tokens, each seeing
    at least `context_length - stride` tokens before it (Hugging Face's perplexity guide).
    A GPTModel or a FastGPT; dropout is off.
    """
    tokens = np.asarray(tokens)  # a memory map stays one: only a batch's rows are read
    L = min(context_length or model.cfg.context_length, model.cfg.context_length)
    stride = stride or L
    if not 1 <= stride <= L:
        raise ValueError(f"stride {stride} must be from 1 to the window ({L})")
    n_predicted = len(tokens) - 1
    if n_predicted < 1:
        raise ValueError(f"scoring needs at least 2 tokens, got {len(tokens)}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0  # summed in float64: a long text adds up millions of losses
    try:
        for batch, span, scored in _window_batches(n_predicted, L, stride, batch_size):
            rows = np.stack([tokens[s : s + span + 1] for s in batch]).astype(np.int64)
            windows = torch.from_numpy(rows).to(device)  # (B, span + 1)
            with autocast():
                logits = model(windows[:, :-1])  # (B, span, vocab_size)
            loss = F.cross_entropy(
                logits[:, span - scored :].flatten(0, 1).float(),
                windows[:, span - scored + 1 :].flatten(),
                reduction="sum",
            )
            total += loss.item()
    finally:
        model.train(was_training)
    return TextScore(total / n_predicted, n_predicted)


def _window_batches(
    n_predicted: int, L: int, stride: int, batch_size: int
) -> Iterator[tuple[list[int], int, int]]:
    """(starts, span, scored): windows of `span` inputs whose last `scored` predictions count,
    batched while both are the same (every window but the first and the last ones)."""
    windows, end = [], 0  # end: the last token predicted so far
    for start in range(0, n_predicted, stride):
        stop = min(start + L, n_predicted)  # the last token this window predicts
        windows.append((start, stop - start, stop - end))
        end = stop
        if stop == n_predicted:
            break
    batch: list[int] = []
    for i, (start, span, scored) in enumerate(windows):
        batch.append(start)
        following = windows[i + 1][1:] if i + 1 < len(windows) else None
        if len(batch) == batch_size or following != (span, scored):
            yield batch, span, scored
            batch = []

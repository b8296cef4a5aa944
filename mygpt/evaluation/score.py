"""Scoring a model on a text: mean next-token loss and perplexity, exact and deterministic."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mygpt.model import GPTModel


@dataclass(frozen=True)
class TextScore:
    """Mean cross-entropy over `n_tokens` predicted tokens, and its perplexity."""

    loss: float
    n_tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    def __str__(self) -> str:
        return f"Loss {self.loss:.4f}, perplexity {self.perplexity:.2f} over {self.n_tokens} tokens"


@torch.no_grad()
def score_tokens(
    model: GPTModel,
    tokens: np.ndarray | torch.Tensor | list[int],
    context_length: int | None = None,
    batch_size: int = 8,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> TextScore:
    """Score every token after the first: windows of `context_length` that do not overlap.

    Window i reads tokens i*L .. i*L+L-1 and predicts the next token of each; a last, shorter
    window predicts the rest, so len(tokens) - 1 tokens are scored. Dropout is off.
    """
    tokens = np.asarray(tokens)  # a memory map stays one: only a batch's rows are read
    L = min(context_length or model.cfg.context_length, model.cfg.context_length)
    n_predicted = len(tokens) - 1
    if n_predicted < 1:
        raise ValueError(f"scoring needs at least 2 tokens, got {len(tokens)}")
    device = next(model.parameters()).device
    starts = list(range(0, n_predicted, L))
    full = [s for s in starts if s + L <= n_predicted]
    batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    if len(full) < len(starts):
        batches.append(starts[len(full) :])  # the shorter last window, alone
    was_training = model.training
    model.eval()
    total = 0.0  # summed in float64: a long text adds up millions of losses
    try:
        for batch in batches:
            span = min(L, n_predicted - batch[0])
            rows = np.stack([tokens[s : s + span + 1] for s in batch]).astype(np.int64)
            windows = torch.from_numpy(rows).to(device)  # (B, span + 1)
            with autocast():
                logits = model(windows[:, :-1])  # (B, span, vocab_size)
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(), windows[:, 1:].flatten(), reduction="sum"
            )
            total += loss.item()
    finally:
        model.train(was_training)
    return TextScore(total / n_predicted, n_predicted)

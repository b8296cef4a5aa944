"""The training loop: cross-entropy loss, periodic evaluation, progress through callbacks."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .model import GPTModel


def make_optimizer(
    model: GPTModel, lr: float, weight_decay: float, device: torch.device | str
) -> torch.optim.AdamW:
    """AdamW over all parameters; the fused kernel where the device has one (same maths).

    On a 2-core CPU, fused AdamW takes a 124M model's optimizer step from ~1.2 s to ~0.13 s.
    """
    fused = torch.device(device).type in ("cpu", "cuda", "mps")
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)


def calc_loss_batch(
    input_batch: torch.Tensor, target_batch: torch.Tensor, model: GPTModel, device: torch.device
) -> torch.Tensor:
    """Mean next-token cross-entropy of one batch."""
    input_batch = input_batch.to(device, non_blocking=True)
    target_batch = target_batch.to(device, non_blocking=True)
    logits = model(input_batch)  # (B, T, vocab_size)
    return F.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


@torch.no_grad()
def calc_loss_loader(
    data_loader: DataLoader, model: GPTModel, device: torch.device, num_batches: int | None = None
) -> float:
    """Average batch loss over the first `num_batches` batches (all by default); nan if empty."""
    if len(data_loader) == 0:
        return math.nan
    num_batches = min(num_batches or len(data_loader), len(data_loader))
    total = 0.0
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i == num_batches:
            break
        total += calc_loss_batch(input_batch, target_batch, model, device).item()
    return total / num_batches


def evaluate_model(
    model: GPTModel,
    train_loader: DataLoader,
    val_loader: DataLoader,
    device: torch.device,
    eval_iter: int,
) -> tuple[float, float]:
    """Train and validation loss over up to `eval_iter` batches each, in eval mode."""
    model.eval()
    try:
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    finally:
        model.train()
    return train_loss, val_loss


class TrainingHistory(NamedTuple):
    """Losses at each evaluation and the number of training tokens seen by then."""

    train_losses: list[float]
    val_losses: list[float]
    tokens_seen: list[int]


def train_model(
    model: GPTModel,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    num_epochs: int,
    eval_freq: int = 5,
    eval_iter: int = 5,
    on_step: Callable[[int, int], None] | None = None,
    on_eval: Callable[[int, int, float, float], None] | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
) -> TrainingHistory:
    """Train for `num_epochs`, evaluating every `eval_freq` steps (starting at step 0).

    Callbacks get 1-based epochs and 0-based global steps: on_step(epoch, step) after each
    optimizer step, on_eval(epoch, step, train_loss, val_loss), on_epoch_end(epoch).
    """
    history = TrainingHistory([], [], [])
    tokens_seen, global_step = 0, -1
    for epoch in range(1, num_epochs + 1):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            tokens_seen += input_batch.numel()
            global_step += 1
            if on_step:
                on_step(epoch, global_step)
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(
                    model, train_loader, val_loader, device, eval_iter
                )
                history.train_losses.append(train_loss)
                history.val_losses.append(val_loss)
                history.tokens_seen.append(tokens_seen)
                if on_eval:
                    on_eval(epoch, global_step, train_loss, val_loss)
        if on_epoch_end:
            on_epoch_end(epoch)
    return history

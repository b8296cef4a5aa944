"""The book's reference functions for training (chapter 5): loss of a batch and of a loader,
evaluation, and `train_model` (the book's train_model_simple), with the lines v1 prints.

`mygpt.training.trainer.Trainer` is the same loop grown up; these stay as the book shows them.
"""

from __future__ import annotations

import math

import tiktoken
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mygpt.inference.generate import complete_text
from mygpt.model import GPTModel


def calc_loss_batch(
    input_batch: torch.Tensor,
    target_batch: torch.Tensor,
    model: torch.nn.Module,
    device: torch.device | str,
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
    device: torch.device | str,
    eval_iter: int,
) -> tuple[float, float]:
    """Train and validation loss over `eval_iter` batches each, in eval mode (the book's)."""
    model.eval()
    try:
        train_loss = calc_loss_loader(train_loader, model, device, eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, eval_iter)
    finally:
        model.train()
    return train_loss, val_loss


def progress_line(epoch: int, step: int, train_loss: float, val_loss: float) -> str:
    """`Ep 1 (Step 000005): Train loss 8.111, Val loss 8.339`: step is 0-based."""
    return f"Ep {epoch} (Step {step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}"


def sample_line(
    model: GPTModel, tokenizer: tiktoken.Encoding, start_context: str, max_new_tokens: int = 50
) -> str:
    """`>>> ` and a greedy completion of `start_context`, on one line."""
    return ">>> " + complete_text(model, tokenizer, start_context, max_new_tokens).replace(
        "\n", " "
    )


def train_model(
    model: GPTModel,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    num_epochs: int,
    eval_freq: int,
    eval_iter: int,
    start_context: str,
    tokenizer: tiktoken.Encoding,
) -> tuple[list[float], list[float], list[int]]:
    """The book's train_model_simple: train, evaluate after step 0 and every `eval_freq` steps,
    print a sample after each epoch; (train_losses, val_losses, tokens_seen) at evaluations.

    `Trainer` is the same loop with accumulation, a schedule, clipping, checkpoints and DDP.
    """
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, step = 0, 0
    for epoch in range(1, num_epochs + 1):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            calc_loss_batch(input_batch, target_batch, model, device).backward()
            optimizer.step()
            tokens_seen += input_batch.numel()
            step += 1
            if (step - 1) % eval_freq == 0:
                train_loss, val_loss = evaluate_model(
                    model, train_loader, val_loader, device, eval_iter
                )
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(progress_line(epoch, step - 1, train_loss, val_loss))
        print(sample_line(model, tokenizer, start_context))
    return train_losses, val_losses, track_tokens_seen

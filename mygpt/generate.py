"""Text generation: greedy, temperature, top-k and top-p sampling, with a KV cache."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from .model import GPTModel
from .tokenizer import text_to_token_ids, token_ids_to_text


def sample_next_token(
    logits: Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick one token id per row of (B, vocab_size) logits; temperature 0 is greedy (argmax)."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_best = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the more likely ones already reach top_p; the best always stays.
        drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


@torch.no_grad()
def generate_stream(
    model: GPTModel,
    idx: Tensor,
    max_new_tokens: int,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """Yield the next (B, 1) token ids one step at a time; arguments as in `generate`."""
    context_size = min(context_size or model.cfg.context_length, model.cfg.context_length)
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    kv_cache = model.new_kv_cache() if use_cache else None
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            if kv_cache is None:
                logits = model(idx[:, -context_size:])
            elif kv_cache.length == 0 or kv_cache.length >= context_size:
                # (Re)fill: once the window slides, every position shifts, so cached keys are
                # stale; the cropped window is recomputed with positions from 0, as without cache.
                kv_cache.reset()
                logits = model(idx[:, -context_size:], kv_cache)
            else:
                logits = model(idx[:, -1:], kv_cache)
            next_ids = sample_next_token(logits[:, -1], temperature, top_k, top_p, generator)
            if eos_id is not None:
                # Rows that already ended keep emitting eos_id, so the batch stays rectangular.
                next_ids = next_ids.masked_fill(finished.unsqueeze(1), eos_id)
                finished |= next_ids.squeeze(1) == eos_id
            idx = torch.cat((idx, next_ids), dim=1)
            yield next_ids
            if eos_id is not None and bool(finished.all()):
                return
    finally:
        model.train(was_training)


def generate(
    model: GPTModel,
    idx: Tensor,
    max_new_tokens: int,
    context_size: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Extend (B, T) token ids to (B, T + new): greedy at temperature 0, else sampled.

    The input is cropped to the last `context_size` tokens (default: the model's context).
    With `eos_id`, a row that emits it is padded with it, and generation stops once every row has.
    """
    new_ids = list(
        generate_stream(
            model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id,
            use_cache, generator,
        )
    )  # fmt: skip
    return torch.cat([idx, *new_ids], dim=1)


def complete_text(model: GPTModel, tokenizer, prompt: str, max_new_tokens: int, **sampling) -> str:
    """The prompt and its continuation as text (greedy unless `sampling` says otherwise)."""
    device = next(model.parameters()).device
    idx = text_to_token_ids(prompt, tokenizer).to(device)
    return token_ids_to_text(generate(model, idx, max_new_tokens, **sampling), tokenizer)

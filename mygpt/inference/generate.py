"""Text generation: greedy, temperature, top-k and top-p sampling, with a KV cache.

One `Sampling` describes how tokens are picked, for token ids (`generate`, `generate_stream`)
and for text (`stream_text`, `complete_text`, the chat).
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass, fields, replace

import tiktoken
import torch
from torch import Tensor

from mygpt.model import GPTModel
from mygpt.tokenizer import ENDOFTEXT_ID


@dataclass(frozen=True)
class Sampling:
    """How to pick the next tokens; the defaults are greedy decoding, as in the book."""

    max_new_tokens: int = 50
    temperature: float = 0.0  # 0 is greedy (argmax)
    top_k: int | None = None  # sample among the k likeliest tokens
    top_p: float | None = None  # sample within this probability mass (nucleus)
    repetition_penalty: float = 1.0  # > 1 discourages tokens already seen; 1 is off
    # OpenAI's: minus this from the logit of each token generated so far (presence), and minus
    # this times its count (frequency); 0 is off, -2 to 2.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    eos_id: int | None = None  # stop a row when it emits this id
    stop: tuple[str, ...] = ()  # text only: end the completion before any of these strings

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not 0.0 <= self.temperature < math.inf:  # also refuses nan
            raise ValueError(f"temperature must be >= 0 and finite, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 < self.repetition_penalty < math.inf:
            raise ValueError(
                f"repetition_penalty must be > 0 and finite, got {self.repetition_penalty}"
            )
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:  # also refuses nan
                raise ValueError(f"{name} must be from -2 to 2, got {getattr(self, name)}")
        if isinstance(self.stop, str):
            raise TypeError("stop is a tuple of strings, not one string")
        if "" in self.stop:
            raise ValueError("stop strings must not be empty")

    def with_(self, **changes) -> Sampling:
        """A copy with some fields changed; None values leave a field as it is."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# The chat's sampling unless flags or /set change it; exported models carry the same defaults.
CHAT_SAMPLING = Sampling(max_new_tokens=50, temperature=0.7, top_k=40, eos_id=ENDOFTEXT_ID)


SAMPLING_FIELDS = tuple(f.name for f in fields(Sampling))


def penalize_repetition(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """transformers' repetition penalty: each seen token's logit / penalty if > 0, else x penalty.

    `logits` is (B, vocab_size) and `seen` the (B, T) ids so far; a token counts once however
    often it was seen.
    """
    if penalty == 1.0:
        return logits
    scores = logits.gather(-1, seen)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    # A penalty near 0 overflows: the largest finite logit keeps such a token first, not nan.
    return logits.scatter(-1, seen, scores.nan_to_num())


def penalize_presence(logits: Tensor, generated: Tensor, sampling: Sampling) -> Tensor:
    """OpenAI's presence and frequency penalties on (B, vocab_size) `logits`, given the (B, T)
    ids generated so far: logit - presence * (count > 0) - frequency * count."""
    if sampling.presence_penalty == 0.0 and sampling.frequency_penalty == 0.0:
        return logits
    counts = torch.zeros_like(logits).scatter_add_(
        -1, generated, torch.ones_like(generated, dtype=logits.dtype)
    )
    return logits - sampling.presence_penalty * (counts > 0) - sampling.frequency_penalty * counts


def sample_next_token(
    logits: Tensor, sampling: Sampling = Sampling(), generator: torch.Generator | None = None
) -> Tensor:
    """Pick one token id per row of (B, vocab_size) logits; temperature 0 is greedy (argmax)."""
    if sampling.temperature <= 0.0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits.float()
    # Shifted so that the best is 0: a tiny temperature then leaves it alone at 0 (0 / 0 is
    # nan, made 0) with the rest at -inf, the greedy limit, where logits / t overflowed to nan.
    logits = logits - logits.amax(dim=-1, keepdim=True)
    logits = (logits / sampling.temperature).nan_to_num(nan=0.0, neginf=float("-inf"))
    top_k, top_p = sampling.top_k, sampling.top_p
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


def _sampling(sampling: Sampling | None, max_new_tokens: int | None, options: dict) -> Sampling:
    """`sampling` (or the defaults) with the keyword options of a call applied."""
    unknown = set(options) - set(SAMPLING_FIELDS)
    if unknown:
        raise TypeError(f"unknown sampling option(s): {', '.join(sorted(unknown))}")
    return replace(sampling or Sampling(), **options).with_(max_new_tokens=max_new_tokens)


@torch.no_grad()
def generate_stream(
    model: GPTModel,
    idx: Tensor,
    max_new_tokens: int | None = None,
    context_size: int | None = None,
    sampling: Sampling | None = None,
    *,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    **options,
) -> Iterator[Tensor]:
    """Yield the next (B, 1) token ids one step at a time; arguments as in `generate`."""
    sampling = _sampling(sampling, max_new_tokens, options)
    if sampling.stop:
        raise ValueError("stop strings are text: use stream_text or complete_text")
    context_size = min(context_size or model.cfg.context_length, model.cfg.context_length)
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    prompt_length = idx.shape[1]
    kv_cache = model.new_kv_cache() if use_cache else None
    was_training = model.training
    model.eval()
    try:
        for _ in range(sampling.max_new_tokens):
            if kv_cache is not None and 0 < kv_cache.length < context_size:
                ids = idx[:, -1:]
            else:
                # (Re)fill: once the window slides, every position shifts, so cached keys are
                # stale; the cropped window is recomputed with positions from 0, as without cache.
                ids = idx[:, -context_size:]
                if kv_cache is not None:
                    kv_cache.reset()
            # A fresh tensor, not a view of idx: a compiled model then sees the same strides
            # each step (a view keeps idx's), so no step compiles a new graph.
            logits = model(ids.new_empty(ids.shape).copy_(ids), kv_cache, last_only=True)
            # As transformers does: the penalty sees every id so far, prompt included.
            logits = penalize_repetition(logits[:, -1].float(), idx, sampling.repetition_penalty)
            logits = penalize_presence(logits, idx[:, prompt_length:], sampling)
            next_ids = sample_next_token(logits, sampling, generator)
            if sampling.eos_id is not None:
                # Rows that already ended keep emitting eos_id, so the batch stays rectangular.
                next_ids = next_ids.masked_fill(finished.unsqueeze(1), sampling.eos_id)
                finished |= next_ids.squeeze(1) == sampling.eos_id
            idx = torch.cat((idx, next_ids), dim=1)
            yield next_ids
            if sampling.eos_id is not None and bool(finished.all()):
                return
    finally:
        model.train(was_training)


def generate(
    model: GPTModel,
    idx: Tensor,
    max_new_tokens: int | None = None,
    context_size: int | None = None,
    sampling: Sampling | None = None,
    *,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    **options,
) -> Tensor:
    """Extend (B, T) token ids to (B, T + new): greedy at temperature 0, else sampled.

    `options` are `Sampling` fields overriding `sampling`, as in the book's
    `generate(model, idx, max_new_tokens=15, context_size=256, top_k=25, temperature=1.4)`.
    The input is cropped to the last `context_size` tokens (default: the model's context).
    With `eos_id`, a row that emits it is padded with it, and generation stops once every row has.
    """
    stream = generate_stream(
        model,
        idx,
        max_new_tokens,
        context_size,
        sampling,
        use_cache=use_cache,
        generator=generator,
        **options,
    )
    return torch.cat([idx, *stream], dim=1)


def stream_text(
    model: GPTModel,
    tokenizer: tiktoken.Encoding,
    prompt: str,
    sampling: Sampling | None = None,
    generator: torch.Generator | None = None,
) -> Generator[str, None, int]:
    """Yield the completion of `prompt` as text pieces, as the tokens are generated; return
    the number of tokens generated.

    The prompt is plain text: "<|endoftext|>" in it is not the special token. The completion
    ends at `eos_id` (not shown) and before the first of the `stop` strings, even one that
    spans several tokens.
    """
    sampling = sampling or Sampling()
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt, disallowed_special=())], device=device)
    text = TextStream(tokenizer, sampling.stop)
    n_tokens = 0
    for next_id in generate_stream(
        model, idx, sampling=replace(sampling, stop=()), generator=generator
    ):
        n_tokens += 1
        token = int(next_id)
        if token == sampling.eos_id:
            break
        shown = text.push(token)
        if shown:
            yield shown
        if text.stopped:
            return n_tokens
    if rest := text.flush():
        yield rest
    return n_tokens


class TextStream:
    """Token ids to text as they come: bytes decoded incrementally (a token can end inside a
    character), and text that may begin a stop string held back until it is known not to."""

    def __init__(self, tokenizer: tiktoken.Encoding, stop: tuple[str, ...] = ()):
        self.tokenizer, self.stop = tokenizer, stop
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.held = ""  # text not shown yet: it may be the start of a stop string
        self.stopped = False  # a stop string was reached: nothing more is shown

    def push(self, token: int) -> str:
        """The text that `token` makes showable: before the stop string, if it completes one."""
        if self.stopped:
            return ""
        self.held += self.decoder.decode(self.tokenizer.decode_single_token_bytes(token))
        hits = [i for i in (self.held.find(stop) for stop in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            shown, self.held = self.held[: min(hits)], ""
            return shown
        keep = _stop_prefix_length(self.held, self.stop)
        shown, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return shown

    def flush(self) -> str:
        """At the end: the text held back, and any incomplete character as U+FFFD."""
        if self.stopped:
            return ""
        rest, self.held = self.held + self.decoder.decode(b"", final=True), ""
        return rest


def _stop_prefix_length(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that begins some stop string."""
    for n in range(min(len(text), max((len(s) for s in stops), default=0)), 0, -1):
        if any(stop.startswith(text[-n:]) for stop in stops):
            return n
    return 0


def complete_text(
    model: GPTModel,
    tokenizer: tiktoken.Encoding,
    prompt: str,
    max_new_tokens: int | None = None,
    sampling: Sampling | None = None,
    *,
    generator: torch.Generator | None = None,
    **options,
) -> str:
    """The prompt and its continuation as text (greedy unless told otherwise); see stream_text."""
    sampling = _sampling(sampling, max_new_tokens, options)
    return prompt + "".join(stream_text(model, tokenizer, prompt, sampling, generator))

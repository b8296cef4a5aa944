"""The batching engine: many sequences generate at once, each with its own prompt, cache
position and sampling (continuous batching, as vLLM and llama.cpp's server do).

At batch 1 a token reads every weight once (fast.py); a step of the engine reads them once for
all its sequences. A step is one forward pass over a packed batch: the new tokens of every
sequence side by side as rows (a chunk of a prompt, or the last token generated), each
attending over its own cache. A request joins at the next step after it arrives, leaves when
it ends, and its slot goes to the next one waiting.

A request's tokens do not depend on what else runs (tests/test_engine.py):
- a row of a Linear layer is computed the same way whatever the number of rows, from two on
  (oneDNN; one row takes a matrix-vector kernel that sums in another order), so a step never
  has fewer than two rows; int8's sums are exact integers, so it needs no such copy;
- attention runs per sequence, over its own keys, in the shapes of a run alone;
- a prompt is cut into chunks at fixed offsets, whatever else waits;
- each request samples with its own random generator.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import tiktoken
import torch
import torch.nn.functional as F
from torch import Tensor

from mygpt.inference.fast import FastGPT
from mygpt.inference.generate import (
    Sampling,
    TextStream,
    penalize_presence,
    penalize_repetition,
    sample_next_token,
)
from mygpt.model import causal_mask

FinishReason = Literal["stop", "length", "cancelled"]  # OpenAI's two, and a client gone


@dataclass(frozen=True)
class Request:
    """What to generate: a prompt's token ids, how to sample, and a seed for sampling (None:
    random); `logprobs` N asks for each token's log-probability and the N likeliest. With
    `prompt_logprobs` and max_new_tokens 0, the prompt is only scored."""

    prompt: tuple[int, ...]
    sampling: Sampling = Sampling()
    seed: int | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None  # the same for each prompt token after the first


@dataclass(frozen=True)
class Update:
    """What one step added to a sequence: a token (None when a request of 0 tokens ends) and
    the text it makes showable (may be empty: held back before a possible stop string)."""

    sequence: Sequence
    token: int | None
    text: str
    logprob: float | None = None
    top_logprobs: dict[int, float] | None = None
    finish_reason: FinishReason | None = None  # set on a sequence's last update


@dataclass(eq=False)
class Sequence:
    """A request being served: the tokens generated, its text, its cache once admitted."""

    request: Request
    tag: object = None  # the caller's: what this sequence answers
    tokens: list[int] = field(default_factory=list)  # generated, an end-of-text one included
    # (log-probability, {id: log-probability} of the likeliest or None) of prompt tokens 2...
    prompt_logprobs: list[tuple[float, dict[int, float] | None]] = field(default_factory=list)
    text: str = ""  # shown so far: what comes before a stop string
    finish_reason: FinishReason | None = None
    cached: int = 0  # positions in the cache: the prompt's, then the tokens fed back
    # (n_layers, 2 (keys, values), n_heads, capacity, head_dim)
    cache: Tensor | None = field(default=None, repr=False)
    generator: torch.Generator | None = field(default=None, repr=False)
    stream: TextStream | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def prompt(self) -> tuple[int, ...]:
        return self.request.prompt


@dataclass(frozen=True)
class Segment:
    """A sequence's rows of a step: `ids` at positions past, past+1, ...; `samples` if its
    last row's logits pick the next token."""

    sequence: Sequence
    ids: tuple[int, ...]
    past: int
    samples: bool


class Engine:
    """Runs requests in batches of up to `max_batch` sequences; a step prefills at most
    `prefill_chunk` prompt tokens, which bounds how long a new prompt stalls the others."""

    def __init__(
        self,
        model: FastGPT,
        tokenizer: tiktoken.Encoding,
        max_batch: int = 16,
        prefill_chunk: int = 256,
    ):
        if max_batch < 1 or prefill_chunk < 1:
            raise ValueError("max_batch and prefill_chunk must be at least 1")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.prefill_chunk = max_batch, prefill_chunk
        self.context_length = model.cfg.context_length
        self.device = model.tok_emb.weight.device
        # Keys and values in the activations' dtype, but float32 on a CPU: its bfloat16
        # attention kernel for one query is 2.7 times slower than float32's (bench/README.md).
        dtype = model.tok_emb.weight.dtype
        self.cache_dtype = torch.float32 if self.device.type == "cpu" else dtype
        # One row takes other float kernels than several; int8's integer sums are exact in
        # any batch, so its lone rows run alone (a fifth faster at batch 1).
        exact = getattr(model, "precision", None) == "int8" and self.device.type == "cpu"
        self.pad_single_rows = not exact
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admitted: prefilling or decoding

    def check(self, request: Request) -> None:
        """Raise ValueError if `request` cannot run: a prompt must leave room for a token,
        or, only scored (no new tokens), fit the context."""
        n, most = len(request.prompt), self.context_length - 1
        if request.sampling.max_new_tokens == 0 and request.prompt_logprobs is not None:
            most += 1
        if not 0 < n <= most:
            raise ValueError(
                f"the prompt has {n} tokens; the model's context of {self.context_length} "
                f"takes 1 to {most}"
            )

    def add(self, request: Request, tag: object = None) -> Sequence:
        """Queue `request`; it joins the batch at the next step with a free slot."""
        self.check(request)
        sequence = Sequence(request, tag)
        self.waiting.append(sequence)
        return sequence

    def cancel(self, sequence: Sequence) -> None:
        """End `sequence` now (its client left); its slot is free at the next step."""
        if not sequence.finished:
            sequence.finish_reason = "cancelled"

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def run(self, requests: Iterable[tuple[Request, object]]) -> Iterator[Update]:
        """Generate for every (request, tag), admitting them as slots free; yield each
        step's updates (`update.sequence.finished` marks a sequence's last)."""
        pending = iter(requests)
        while True:
            while len(self.waiting) < self.max_batch and (item := next(pending, None)):
                self.add(*item)
            if not self.busy:
                return
            yield from self.step()

    @torch.no_grad()
    def step(self) -> list[Update]:
        """One forward pass over every running sequence; the tokens it generated."""
        self._drop_finished()  # cancelled since the last step
        updates = self._admit()
        segments = self._schedule()
        for segment, logits in zip(segments, self._forward(segments), strict=True):
            sequence = segment.sequence
            if sequence.request.prompt_logprobs is not None and segment.past < len(sequence.prompt):
                self._score_prompt(segment, logits)
            if not segment.samples:
                continue
            if sequence.request.sampling.max_new_tokens == 0:  # the prompt scored: done
                sequence.finish_reason = "length"
                updates.append(Update(sequence, None, "", finish_reason="length"))
            else:
                updates.append(self._sample(sequence, logits[-1]))
        self._drop_finished()
        return updates

    def _drop_finished(self) -> None:
        """Free the slots and caches of sequences that have ended."""
        for sequence in self.running:
            if sequence.finished:
                sequence.cache = None
        self.running = [s for s in self.running if not s.finished]

    def _admit(self) -> list[Update]:
        """Move waiting sequences into free slots; a request of 0 tokens ends at once."""
        updates = []
        while self.waiting and len(self.running) < self.max_batch:
            sequence = self.waiting.popleft()
            if sequence.finished:  # cancelled while waiting
                continue
            request = sequence.request
            if request.sampling.max_new_tokens == 0 and request.prompt_logprobs is None:
                sequence.finish_reason = "length"
                updates.append(Update(sequence, None, "", finish_reason="length"))
                continue
            cfg = self.model.cfg
            capacity = min(
                self.context_length, len(request.prompt) + max(request.sampling.max_new_tokens, 1)
            )
            shape = (cfg.n_layers, 2, cfg.n_heads, capacity, cfg.head_dim)
            sequence.cache = torch.empty(shape, dtype=self.cache_dtype, device=self.device)
            sequence.stream = TextStream(self.tokenizer, request.sampling.stop)
            if request.sampling.temperature > 0:
                seed = request.seed if request.seed is not None else random_seed()
                sequence.generator = torch.Generator(self.device).manual_seed(seed)
            self.running.append(sequence)
        return updates

    def _schedule(self) -> list[Segment]:
        """This step's rows: each decoding sequence's last token, and chunks of prompts
        up to `prefill_chunk` tokens (always one, however long)."""
        segments, budget = [], self.prefill_chunk
        for sequence in self.running:
            prompt, past = sequence.prompt, sequence.cached
            if past >= len(prompt):  # decoding
                segments.append(Segment(sequence, (sequence.tokens[-1],), past, True))
                continue
            end = min(len(prompt), (past // self.prefill_chunk + 1) * self.prefill_chunk)
            if end - past > budget:
                continue  # its next chunk waits for a step with room
            budget -= end - past
            segments.append(Segment(sequence, prompt[past:end], past, end == len(prompt)))
        return segments

    def _forward(self, segments: list[Segment]) -> list[Tensor]:
        """Each segment's logits (float32) of the packed batch of `segments`: every row's
        where its prompt is scored, else its last row's if it samples, else none."""
        if not segments:
            return []
        ids = [i for s in segments for i in s.ids]
        positions = [s.past + j for s in segments for j in range(len(s.ids))]
        ends = list(_ends(segments))
        wanted = [self._rows_wanted(s, end) for s, end in zip(segments, ends, strict=True)]
        rows = [row for rows in wanted for row in rows]
        n_rows = len(rows)
        if self.pad_single_rows and len(ids) == 1:  # see the module's docstring
            ids, positions = ids * 2, positions * 2
        if self.pad_single_rows and n_rows == 1:
            rows = rows * 2
        attend = _Attention(segments, ends, len(ids), self.device)
        logits = self.model.forward_packed(
            torch.tensor(ids, device=self.device),
            torch.tensor(positions, device=self.device),
            attend,
            torch.tensor(rows, dtype=torch.long, device=self.device),
        )
        for s in segments:
            s.sequence.cached += len(s.ids)
        return list(logits[:n_rows].float().split([len(w) for w in wanted]))

    @staticmethod
    def _rows_wanted(segment: Segment, end: int) -> range:
        """The packed rows of `segment` whose logits are needed (`end`: its last row)."""
        scores = segment.sequence.request.prompt_logprobs is not None
        if scores and segment.past < len(segment.sequence.prompt):
            return range(end + 1 - len(segment.ids), end + 1)
        return range(end, end + 1) if segment.samples else range(0)

    def _score_prompt(self, segment: Segment, logits: Tensor) -> None:
        """Record the log-probability of each prompt token that `segment`'s rows predict."""
        sequence, n_top = segment.sequence, segment.sequence.request.prompt_logprobs
        logprobs = logits.log_softmax(-1)  # row j predicts the token after position past + j
        targets = sequence.prompt[segment.past + 1 : segment.past + len(segment.ids) + 1]
        chosen = logprobs[torch.arange(len(targets)), torch.tensor(targets)].tolist()
        tops = [_likeliest(row, n_top) for row in logprobs[: len(targets)]]
        sequence.prompt_logprobs += list(zip(chosen, tops, strict=True))

    def _sample(self, sequence: Sequence, logits: Tensor) -> Update:
        """Pick `sequence`'s next token from its (vocab_size,) logits; end it if it is done."""
        request, sampling = sequence.request, sequence.request.sampling
        logprob = top = None
        if request.logprobs is not None:
            logprobs = logits.log_softmax(-1)
        if sampling.repetition_penalty != 1.0:
            seen = torch.tensor([[*sequence.prompt, *sequence.tokens]], device=logits.device)
            logits = penalize_repetition(logits[None], seen, sampling.repetition_penalty)[0]
        if sequence.tokens and (sampling.presence_penalty or sampling.frequency_penalty):
            generated = torch.tensor([sequence.tokens], device=logits.device)
            logits = penalize_presence(logits[None], generated, sampling)[0]
        token = int(sample_next_token(logits[None], sampling, sequence.generator))
        if request.logprobs is not None:
            logprob, top = float(logprobs[token]), _likeliest(logprobs, request.logprobs)
        sequence.tokens.append(token)
        text = ""
        if token == sampling.eos_id:
            sequence.finish_reason = "stop"
        else:
            text = sequence.stream.push(token)
            if sequence.stream.stopped:
                sequence.finish_reason = "stop"
        if not sequence.finished and (
            len(sequence.tokens) >= sampling.max_new_tokens
            or len(sequence.prompt) + len(sequence.tokens) >= self.context_length
        ):
            sequence.finish_reason = "length"
        if sequence.finished:  # its cache is freed at the end of this step
            text += sequence.stream.flush()
        sequence.text += text
        return Update(sequence, token, text, logprob, top, sequence.finish_reason)


def _likeliest(logprobs: Tensor, n: int | None) -> dict[int, float] | None:
    """The `n` likeliest ids of a (vocab_size,) row of log-probabilities; None for 0 or None."""
    if not n:
        return None
    values, ids = logprobs.topk(n)
    return dict(zip(ids.tolist(), values.tolist(), strict=True))


def _ends(segments: list[Segment]) -> Iterator[int]:
    """The packed row of each segment's last token."""
    end = -1
    for s in segments:
        end += len(s.ids)
        yield end


class _Attention:
    """A step's attention, called by each layer: every segment's new keys and values go into
    its sequence's cache, and its queries attend over that cache, one sequence at a time."""

    def __init__(self, segments: list[Segment], ends: list[int], n_rows: int, device: torch.device):
        self.parts = []
        for s, end in zip(segments, ends, strict=True):
            cache, T = s.sequence.cache, len(s.ids)
            self.parts.append(
                (  # each layer's views, made once a step rather than once a layer
                    end + 1 - T,
                    end + 1,
                    cache[:, :, :, s.past : s.past + T].unbind(0),  # where the new ones go
                    cache[:, 0, :, : s.past + T].unbind(0),  # keys to attend over
                    cache[:, 1, :, : s.past + T].unbind(0),  # values
                    *causal_mask(T, s.past, device),
                )
            )
        self.padding = n_rows - (ends[-1] + 1)  # rows that are no sequence's (0 or 1)

    def __call__(self, layer: int, qkv: Tensor) -> Tensor:
        N, _, n_heads, head_dim = qkv.shape  # (N, 3, n_heads, head_dim)
        contexts = []
        for start, stop, new_kv, keys, values, mask, is_causal in self.parts:
            new = qkv[start:stop]  # (T, 3, n_heads, head_dim)
            new_kv[layer].copy_(new[:, 1:].permute(1, 2, 0, 3))
            queries = new[:, 0].transpose(0, 1).to(keys[layer].dtype)  # (n_heads, T, head_dim)
            contexts.append(
                F.scaled_dot_product_attention(
                    queries, keys[layer], values[layer], attn_mask=mask, is_causal=is_causal
                )
            )
        if self.padding:
            contexts.append(contexts[-1].new_zeros(n_heads, self.padding, head_dim))
        context = torch.cat(contexts, dim=1).transpose(0, 1)  # (N, n_heads, head_dim)
        return context.reshape(N, n_heads * head_dim).to(qkv.dtype)


def random_seed() -> int:
    """A seed for a request that gave none: from the OS, not from any global generator."""
    return int.from_bytes(os.urandom(8), "little") >> 1

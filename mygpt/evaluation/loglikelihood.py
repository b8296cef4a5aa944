"""Log-likelihoods of continuations after a context, many per forward pass.

What lm-evaluation-harness computes for "loglikelihood" and "multiple_choice" tasks: the sum
of the continuation tokens' log-probabilities, and whether each was the likeliest token.

A HellaSwag item is one context and four endings. Rather than four padded rows, an item is
packed once as a tree: the context's tokens, then each ending's, every ending attending over the
context and itself. Items sit side by side in one packed batch (FastGPT.forward_packed, as the
engine's steps do), so a forward pass scores many items with no padding and each context once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import tiktoken
import torch
import torch.nn.functional as F
from torch import Tensor

from mygpt.inference.fast import FastGPT


@dataclass(frozen=True)
class Tree:
    """Token ids of a context, and of the continuations scored after it."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]

    @property
    def n_rows(self) -> int:
        # The last token of a continuation is only predicted, never read.
        return len(self.context) + sum(max(len(c) - 1, 0) for c in self.continuations)


@dataclass(frozen=True)
class Scored:
    """A continuation's summed log-probability, its length in tokens, and whether every token
    was the likeliest one (the harness's `is_greedy`)."""

    logprob: float
    n_tokens: int
    greedy: bool


def encode_pair(
    tokenizer: tiktoken.Encoding, context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """The harness's tokens for a causal model: the context alone, and what the whole text
    adds after it; a context's trailing spaces belong to the continuation; an empty context
    is <|endoftext|>."""
    if not context:
        return [tokenizer.eot_token], tokenizer.encode_ordinary(continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer.encode_ordinary(context + continuation)
    context_ids = tokenizer.encode_ordinary(context)
    return context_ids, whole[len(context_ids) :]


def text_tree(tokenizer: tiktoken.Encoding, context: str, continuations: Sequence[str]) -> Tree:
    """The tree of a context and its continuations, tokenized as the harness does."""
    pairs = [encode_pair(tokenizer, context, c) for c in continuations]
    context_ids = pairs[0][0]  # the same for every continuation: it is encoded alone
    return Tree(tuple(context_ids), tuple(tuple(ids) for _, ids in pairs))


def fit(tree: Tree, context_length: int) -> list[Tree]:
    """The tree, or, where a continuation would run past the context, one tree per
    continuation with its context cut from the left, as the harness truncates."""
    if max(len(tree.context) + len(c) - 1 for c in tree.continuations) <= context_length:
        return [tree]
    trees = []
    for c in tree.continuations:
        if len(c) > context_length:
            raise ValueError(f"a continuation of {len(c)} tokens exceeds the context")
        whole = (tree.context + c)[-(context_length + 1) :]
        trees.append(Tree(whole[: len(whole) - len(c)], (c,)))
    return trees


@torch.no_grad()
def score_trees(
    model: FastGPT,
    trees: Sequence[Tree],
    batch_tokens: int = 4096,
    progress: Callable[[int], object] | None = None,
) -> list[list[Scored]]:
    """Every continuation of every tree scored; batches of about `batch_tokens` packed rows.

    `progress(n)` hears each batch's number of trees.
    """
    L = model.cfg.context_length
    parts = [(i, part) for i, tree in enumerate(trees) for part in fit(tree, L)]
    results: list[list[Scored]] = [[] for _ in trees]
    for batch in _batches(parts, batch_tokens):
        scored = _score_batch(model, [tree for _, tree in batch])
        for (i, _), part in zip(batch, scored, strict=True):
            results[i] += part
        if progress:
            progress(len({i for i, _ in batch}))
    return results


def _batches(parts: list[tuple[int, Tree]], batch_tokens: int) -> Iterator[list]:
    """Consecutive trees, at most `batch_tokens` rows a batch (at least one tree)."""
    batch, rows = [], 0
    for part in parts:
        if batch and rows + part[1].n_rows > batch_tokens:
            yield batch
            batch, rows = [], 0
        batch.append(part)
        rows += part[1].n_rows
    if batch:
        yield batch


def _score_batch(model: FastGPT, trees: list[Tree]) -> list[list[Scored]]:
    device = model.tok_emb.weight.device
    ids, positions, reads, targets, sizes = [], [], [], [], []
    for tree in trees:
        start, n_context = len(ids), len(tree.context)
        ids += tree.context
        positions += range(n_context)
        for c in tree.continuations:
            branch = len(ids)
            ids += c[:-1]
            positions += range(n_context, n_context + len(c) - 1)
            # Token k of a continuation is predicted at the context's last row (k = 0), else
            # at the continuation's row k - 1.
            reads += [start + n_context - 1, *range(branch, branch + len(c) - 1)][: len(c)]
            targets += c
        sizes.append(len(ids) - start)
    attend = _TreeAttention(trees, sizes, device)
    logits = model.forward_packed(
        torch.tensor(ids, device=device),
        torch.tensor(positions, device=device),
        attend,
        torch.tensor(reads, device=device),
    )  # (len(reads), vocab_size)
    logprobs = F.log_softmax(logits.float(), dim=-1)
    wanted = torch.tensor(targets, device=device)
    picked = logprobs.gather(1, wanted[:, None])[:, 0].double().tolist()
    greedy = (logprobs.argmax(dim=-1) == wanted).tolist()
    out, k = [], 0
    for tree in trees:
        scored = []
        for c in tree.continuations:
            n = len(c)
            scored.append(Scored(sum(picked[k : k + n]), n, all(greedy[k : k + n])))
            k += n
        out.append(scored)
    return out


class _TreeAttention:
    """Attention within each tree of a packed batch: the context causal, each continuation
    over the whole context and causally over itself (one masked call per tree and layer)."""

    def __init__(self, trees: list[Tree], sizes: list[int], device: torch.device):
        self.parts = []
        start = 0
        for tree, size in zip(trees, sizes, strict=True):
            self.parts.append((start, start + size, _tree_mask(tree, size, device)))
            start += size

    def __call__(self, layer: int, qkv: Tensor) -> Tensor:
        N, _, n_heads, head_dim = qkv.shape  # (N, 3, n_heads, head_dim)
        contexts = []
        for start, stop, mask in self.parts:
            q, k, v = qkv[start:stop].permute(1, 2, 0, 3)  # each (n_heads, T, head_dim)
            contexts.append(
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
            )
        context = torch.cat(contexts, dim=1).transpose(0, 1)  # (N, n_heads, head_dim)
        return context.reshape(N, n_heads * head_dim)


def _tree_mask(tree: Tree, size: int, device: torch.device) -> Tensor | None:
    """(size, size) bools, True where a row may attend; None when plain causal will do."""
    if len(tree.continuations) == 1:
        return None  # context then one continuation: an ordinary causal sequence
    allowed = torch.ones(size, size, dtype=torch.bool, device=device).tril()
    n = len(tree.context)
    for c in tree.continuations:
        # Rows of earlier continuations are not this one's past.
        allowed[n : n + len(c) - 1, len(tree.context) : n] = False
        n += len(c) - 1
    return allowed

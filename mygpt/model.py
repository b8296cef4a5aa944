"""GPT-2 from scratch: LayerNorm, GELU, FeedForward, MultiHeadAttention, TransformerBlock, GPTModel.

Module and parameter names follow Raschka's *Build a Large Language Model (From Scratch)*.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mygpt.config import GPTConfig


class LayerNorm(nn.Module):
    """Layer normalization over the last dimension, with a learnable scale and shift."""

    def __init__(self, emb_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: Tensor) -> Tensor:
        # Same maths as (x - mean) / sqrt(biased var + eps) * scale + shift, in one fused kernel.
        return F.layer_norm(x, (x.shape[-1],), self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GELU with GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """Position-wise MLP: expand 4x, GELU, project back."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim),
            GELU(),
            nn.Linear(4 * cfg.emb_dim, cfg.emb_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class KVCache:
    """Keys and values of the tokens processed so far, so generation feeds one new token a step.

    Buffers are allocated once for the whole context on first use; `length` counts the cached
    positions, which are also the positions of the next tokens.
    """

    def __init__(self, n_layers: int, max_length: int):
        self.max_length = max_length
        self.length = 0
        self._keys: list[Tensor | None] = [None] * n_layers
        self._values: list[Tensor | None] = [None] * n_layers

    def _buffer_shape(self, batch: int, n_heads: int, head_dim: int) -> tuple[int, ...]:
        # One spare position: no slice of a full cache spans the whole buffer, a case a
        # compiled graph would otherwise be specialized for, and compiled again.
        return batch, n_heads, self.max_length + 1, head_dim

    def allocate(self, batch: int, n_heads: int, head_dim: int, **tensor_options) -> KVCache:
        """Allocate every layer's buffers now (a compiled model then sees no first use)."""
        shape = self._buffer_shape(batch, n_heads, head_dim)
        for layer in range(len(self._keys)):
            self._keys[layer] = torch.empty(shape, **tensor_options)
            self._values[layer] = torch.empty(shape, **tensor_options)
        return self

    def append(self, layer: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store a layer's new (B, n_heads, T, head_dim) keys and values; return all cached."""
        end = self.length + keys.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache holds {self.max_length} positions, {end} requested")
        if self._keys[layer] is None or self._keys[layer].shape[0] != keys.shape[0]:
            shape = self._buffer_shape(*keys.shape[:2], keys.shape[3])
            self._keys[layer] = keys.new_empty(shape)
            self._values[layer] = values.new_empty(shape)
        self._keys[layer][:, :, self.length : end] = keys
        self._values[layer][:, :, self.length : end] = values
        return self._keys[layer][:, :, :end], self._values[layer][:, :, :end]

    def advance(self, n_tokens: int) -> None:
        self.length += n_tokens

    def reset(self) -> None:
        self.length = 0


def causal_mask(T: int, past: int, device: torch.device) -> tuple[Tensor | None, bool]:
    """SDPA's (attn_mask, is_causal) for T new queries after `past` cached positions."""
    # The query at position past+i may see keys 0..past+i. SDPA's is_causal aligns the mask
    # top-left, which is right only when there is no past; a single new token sees everything.
    if T == 1:
        return None, False
    if past == 0:
        return None, True
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past), False


def next_positions(in_idx: Tensor, kv_cache: KVCache | None, context_length: int) -> Tensor:
    """Positions of the (B, T) new tokens, after those in the cache; past the context: an error."""
    start = kv_cache.length if kv_cache is not None else 0
    end = start + in_idx.shape[1]
    if end > context_length:
        raise ValueError(f"{end} positions exceed the context length {context_length}")
    return torch.arange(start, end, device=in_idx.device)


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention."""

    def __init__(self, cfg: GPTConfig, layer_idx: int = 0):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.head_dim
        self.layer_idx = layer_idx  # which slot of a KVCache this layer owns
        self.W_query = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.W_key = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.W_value = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.qkv_bias)
        self.out_proj = nn.Linear(cfg.emb_dim, cfg.emb_dim)
        self.drop_rate = cfg.drop_rate  # applied to the attention weights

    def _heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(
            1, 2
        )  # (B, n_heads, T, head_dim)

    def forward(self, x: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        B, T, C = x.shape  # (batch, tokens, emb_dim)
        queries = self._heads(self.W_query(x))
        keys = self._heads(self.W_key(x))
        values = self._heads(self.W_value(x))

        past = 0
        if kv_cache is not None:
            past = kv_cache.length
            keys, values = kv_cache.append(self.layer_idx, keys, values)  # (B, n_heads, past+T, hd)

        mask, is_causal = causal_mask(T, past, x.device)
        context = F.scaled_dot_product_attention(
            queries,
            keys,
            values,
            attn_mask=mask,
            dropout_p=self.drop_rate if self.training else 0.0,
            is_causal=is_causal,
        )  # (B, n_heads, T, head_dim)
        context = context.transpose(1, 2).reshape(B, T, C)
        return self.out_proj(context)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(norm1(x)), then x + ff(norm2(x)), dropout on each branch."""

    def __init__(self, cfg: GPTConfig, layer_idx: int = 0):
        super().__init__()
        self.att = MultiHeadAttention(cfg, layer_idx)
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    """GPT-2: token + position embeddings, transformer blocks, final norm, linear output head."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList(TransformerBlock(cfg, i) for i in range(cfg.n_layers))
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        # When set, training keeps only each block's input and recomputes the rest in the
        # backward pass: memory for long contexts and large models, for a third more compute.
        self.activation_checkpointing = False

    def tie_weights(self) -> GPTModel:
        """Share one matrix between the token embedding and the output head, as GPT-2 does."""
        self.out_head.weight = self.tok_emb.weight
        return self

    @property
    def is_tied(self) -> bool:
        return self.out_head.weight is self.tok_emb.weight

    def new_kv_cache(self) -> KVCache:
        """An empty cache spanning this model's whole context."""
        return KVCache(self.cfg.n_layers, self.cfg.context_length)

    def forward(
        self, in_idx: Tensor, kv_cache: KVCache | None = None, *, last_only: bool = False
    ) -> Tensor:
        """Logits (B, T, vocab_size) for token ids (B, T); with a cache, T continues its tokens.

        With `last_only`, the logits of the last position only (B, 1, vocab_size): generation's.
        """
        positions = next_positions(in_idx, kv_cache, self.cfg.context_length)
        x = self.drop_emb(self.tok_emb(in_idx) + self.pos_emb(positions))  # (B, T, emb_dim)
        for block in self.trf_blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, kv_cache, use_reentrant=False)
            else:
                x = block(x, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(in_idx.shape[1])
        if last_only:
            x = x[:, -1:]
        return self.out_head(self.final_norm(x))  # (B, T, vocab_size)

    def num_parameters(self) -> int:
        """Number of parameters; a tied output head counts once (parameters() deduplicates)."""
        return sum(p.numel() for p in self.parameters())

"""GPTModel's inference copy: the same maths, laid out for generating one request at a time.

At batch 1 a token reads every weight once, so speed is how fast each Linear layer streams its
matrix. What differs from model.py, which stays the book's readable model:
- one query/key/value projection per block (a (3 emb_dim, emb_dim) matrix) instead of three;
- Linear layers run oneDNN's kernels on a CPU (F.linear calls MKL, whose float32
  matrix-vector product streams weights at half the speed on AMD CPUs), with the GELU fused
  on prompts; int8 ones multiply int8 by int8 (`torch._int_mm`), as llama.cpp's Q8_0 does;
- with `last_only`, the output head (a third of GPT-2 124M's weights) runs for the last
  position only, all generation needs;
- `compile_for_generation` removes the Python between kernels, which int8 needs most.
`for_inference` (precision.py) builds it; tests hold it equal to GPTModel.
"""

from __future__ import annotations

import copy
import platform
import time
from collections.abc import Callable
from typing import TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mygpt.inference.generate import generate
from mygpt.model import GPTModel, KVCache, TransformerBlock, causal_mask, next_positions

# (layer, qkv (N, 3, n_heads, head_dim)) -> each token's attention context (N, emb_dim)
Attend: TypeAlias = Callable[[int, Tensor], Tensor]
# The dtype of embeddings, norms and activations: int8 is the Linear weights' alone.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.float32}
# oneDNN's Linear kernels, measured on x86 CPUs only; elsewhere F.linear.
ONEDNN = torch.backends.mkldnn.is_available() and platform.machine() in ("x86_64", "AMD64")


def _frozen(tensor: Tensor | None) -> nn.Parameter | None:
    if tensor is None or isinstance(tensor, nn.Parameter):  # a tied head keeps the embedding's
        return tensor
    return nn.Parameter(tensor, requires_grad=False)


def _copy(tensor: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if tensor is None else tensor.detach().to(dtype, copy=True)


def gelu(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")  # GPT-2's


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None, with_gelu: bool) -> Tensor:
    # GELU as oneDNN's post-op: applied while the output is in registers, not in a second pass.
    post_op, algorithm = ("gelu", "tanh") if with_gelu else ("none", "")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, post_op, [], algorithm)


@torch.library.custom_op("mygpt::onednn_linear", mutates_args=())
def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None, with_gelu: bool) -> Tensor:
    """`_onednn` as an opaque call to torch.compile, which would otherwise pick MKL."""
    return _onednn(x, weight, bias, with_gelu)


@onednn_linear.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None, with_gelu: bool) -> Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0])


class DenseLinear(nn.Module):
    """x W^T + b with W in float32 or bfloat16, then GELU if `with_gelu`."""

    def __init__(self, weight: Tensor, bias: Tensor | None, with_gelu: bool = False):
        super().__init__()
        self.weight = _frozen(weight)  # (out, in)
        self.bias = _frozen(bias)
        self.with_gelu = with_gelu
        self.onednn = weight.device.type == "cpu" and ONEDNN

    @classmethod
    def from_weight(
        cls, weight: Tensor, bias: Tensor | None, dtype: torch.dtype, with_gelu: bool = False
    ) -> DenseLinear:
        return cls(weight.detach().to(dtype).contiguous(), _copy(bias, dtype), with_gelu)

    def forward(self, x: Tensor) -> Tensor:
        one_row = x.numel() == x.shape[-1]
        if torch.compiler.is_compiling():
            return self._compiled(x, one_row)
        if not self.onednn:
            y = F.linear(x, self.weight, self.bias)
        elif self.with_gelu and not one_row:  # the post-op saves a pass over a prompt's
            return _onednn(x, self.weight, self.bias, True)
        else:  # a matrix-vector product is faster without it
            y = _onednn(x, self.weight, self.bias, False)
        return gelu(y) if self.with_gelu else y

    def _compiled(self, x: Tensor, one_row: bool) -> Tensor:
        if self.onednn and self.weight.dtype == torch.float32:
            if not one_row:  # opaque to inductor, which would call MKL
                return onednn_linear(x, self.weight, self.bias, self.with_gelu)
            # One row: inductor's own loop streams the matrix faster than oneDNN (about 47
            # against 39 GB/s on an AMD EPYC) and fuses the bias.
            y = (self.weight * x.unsqueeze(-2)).sum(-1)
            y = y if self.bias is None else y + self.bias
        else:  # bfloat16: ATen's kernels are oneDNN's, and C++ can call them
            y = F.linear(x, self.weight, self.bias)
        return gelu(y) if self.with_gelu else y


class Int8Linear(nn.Module):
    """A Linear layer in int8: weights with one scale per output row (symmetric), and each
    input row quantized as it comes with a scale of its own, as llama.cpp's Q8_0 quantizes
    activations (per block of 32 there). The products sum exactly in int32, so a row's numbers
    never depend on the other rows of the batch or on the KV cache.
    """

    def __init__(
        self, weight: Tensor, scales: Tensor, bias: Tensor | None, with_gelu: bool = False
    ):
        super().__init__()
        self.weight = _frozen(weight)  # (out, in) int8
        self.scales = _frozen(scales)  # (out,) float32
        self.bias = _frozen(bias)  # (out,) float32 or None
        self.with_gelu = with_gelu

    @classmethod
    def from_weight(
        cls, weight: Tensor, bias: Tensor | None, dtype: torch.dtype, with_gelu: bool = False
    ) -> Int8Linear:
        q, scales = quantize_rows(weight.detach().float())
        return cls(q, scales.squeeze(1), _copy(bias, dtype), with_gelu)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x2d = x.reshape(-1, shape[-1])
        q, x_scales = quantize_rows(x2d if x2d.dtype == torch.float32 else x2d.float())
        if q.device.type == "cpu" and hasattr(torch, "_int_mm"):  # int8 x int8 -> int32
            sums = torch._int_mm(q, self.weight.t())
        else:  # the same maths in float32, slower, where PyTorch has no such kernel
            sums = q.float() @ self.weight.float().t()
        scales = x_scales * self.scales  # (N, out)
        y = sums * scales if self.bias is None else torch.addcmul(self.bias, sums, scales)
        y = gelu(y.view(*shape[:-1], -1)) if self.with_gelu else y.view(*shape[:-1], -1)
        return y if y.dtype == x.dtype else y.to(x.dtype)


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 rows of a 2-D float tensor and their (rows, 1) scales: x ~ q * scales."""
    largest = torch.linalg.vector_norm(x, float("inf"), dim=1, keepdim=True)  # max |x| a row
    scales = largest.clamp_(min=1e-12).div_(127)  # the largest maps to 127
    return torch.round(x / scales).to(torch.int8), scales


LINEARS: dict[str, Callable[..., nn.Module]] = {  # (weight, bias, dtype, with_gelu=False)
    "float32": DenseLinear.from_weight,
    "bfloat16": DenseLinear.from_weight,
    "int8": Int8Linear.from_weight,
}


class FastBlock(nn.Module):
    """A TransformerBlock with its query, key and value projections fused into one."""

    def __init__(self, block: TransformerBlock, precision: str):
        super().__init__()
        att, dtype, linear = block.att, DTYPES[precision], LINEARS[precision]
        self.layer_idx, self.n_heads, self.head_dim = att.layer_idx, att.n_heads, att.head_dim
        projections = (att.W_query, att.W_key, att.W_value)
        weight = torch.cat([p.weight.detach().float() for p in projections])  # (3 C, C)
        bias = None
        if att.W_query.bias is not None:
            bias = torch.cat([p.bias.detach().float() for p in projections])
        self.qkv = linear(weight, bias, dtype)
        self.out_proj = linear(att.out_proj.weight, att.out_proj.bias, dtype)
        self.ff_in = linear(block.ff.layers[0].weight, block.ff.layers[0].bias, dtype, True)
        self.ff_out = linear(block.ff.layers[2].weight, block.ff.layers[2].bias, dtype)
        self.norm1 = copy.deepcopy(block.norm1).to(dtype)
        self.norm2 = copy.deepcopy(block.norm2).to(dtype)

    def forward(self, x: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        B, T, C = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, T, 3, self.n_heads, self.head_dim)
        queries, keys, values = qkv.permute(2, 0, 3, 1, 4)  # each (B, n_heads, T, head_dim)
        past = 0
        if kv_cache is not None:
            past = kv_cache.length
            keys, values = kv_cache.append(self.layer_idx, keys, values)
        mask, is_causal = causal_mask(T, past, x.device)
        context = F.scaled_dot_product_attention(
            queries, keys, values, attn_mask=mask, is_causal=is_causal
        )  # (B, n_heads, T, head_dim)
        x = x + self.out_proj(context.transpose(1, 2).reshape(B, T, C))
        return x + self.ff_out(self.ff_in(self.norm2(x)))  # ff_in applies the GELU

    def forward_packed(self, x: Tensor, attend: Attend) -> Tensor:
        """`forward` for the new tokens of many sequences packed as rows of x (N, emb_dim);
        `attend` gives each token's attention over its own sequence (engine.py)."""
        N, C = x.shape
        qkv = self.qkv(self.norm1(x)).view(N, 3, self.n_heads, self.head_dim)
        x = x + self.out_proj(attend(self.layer_idx, qkv))  # (N, C)
        return x + self.ff_out(self.ff_in(self.norm2(x)))


class FastGPT(nn.Module):
    """GPTModel's inference copy in float32, bfloat16 or int8 (see the module's docstring)."""

    def __init__(self, model: GPTModel, precision: str):
        super().__init__()
        if precision not in LINEARS:
            raise ValueError(f"unknown precision {precision!r}")
        dtype = DTYPES[precision]
        self.cfg, self.precision = model.cfg, precision
        self.tok_emb = copy.deepcopy(model.tok_emb).to(dtype)
        self.pos_emb = copy.deepcopy(model.pos_emb).to(dtype)
        self.trf_blocks = nn.ModuleList(FastBlock(b, precision) for b in model.trf_blocks)
        self.final_norm = copy.deepcopy(model.final_norm).to(dtype)
        if model.is_tied and precision != "int8":
            self.out_head = DenseLinear(self.tok_emb.weight, None)  # one matrix, as in GPT-2
        else:
            self.out_head = LINEARS[precision](model.out_head.weight, None, dtype)
        self.requires_grad_(False).eval()  # the copied embeddings and norms too

    def new_kv_cache(self, batch: int = 1) -> KVCache:
        """An empty cache spanning this model's whole context, allocated for `batch` rows."""
        cfg, weight = self.cfg, self.tok_emb.weight
        cache = KVCache(cfg.n_layers, cfg.context_length)
        return cache.allocate(
            batch, cfg.n_heads, cfg.head_dim, dtype=weight.dtype, device=weight.device
        )

    def forward(
        self, in_idx: Tensor, kv_cache: KVCache | None = None, *, last_only: bool = False
    ) -> Tensor:
        """As GPTModel.forward: logits (B, T, vocab_size), or (B, 1, vocab_size) if last_only."""
        positions = next_positions(in_idx, kv_cache, self.cfg.context_length)
        x = self.tok_emb(in_idx) + self.pos_emb(positions)  # (B, T, emb_dim)
        for block in self.trf_blocks:
            x = block(x, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(in_idx.shape[1])
        if last_only:
            x = x[:, -1:]
        return self.out_head(self.final_norm(x))

    def forward_packed(
        self, tokens: Tensor, positions: Tensor, attend: Attend, rows: Tensor
    ) -> Tensor:
        """Logits (len(rows), vocab_size) at `rows` of a packed batch: `tokens` and their
        `positions` (N,) are the new tokens of many sequences, side by side (engine.py)."""
        x = self.tok_emb(tokens) + self.pos_emb(positions)  # (N, emb_dim)
        for block in self.trf_blocks:
            x = block.forward_packed(x, attend)
        if len(rows) == 0:  # a step of prompt chunks only
            return x.new_empty(0, self.cfg.vocab_size)
        return self.out_head(self.final_norm(x[rows]))


def compile_for_generation(model: FastGPT, log: Callable[[str], object] | None = None) -> nn.Module:
    """`model` through torch.compile, with C++ wrapper code (no Python between kernels), and
    warmed up: the graphs of a prompt and of decoding are compiled now, once per process."""
    fast = torch.compile(model, dynamic=True, options={"cpp_wrapper": True})
    start = time.perf_counter()
    device = model.tok_emb.weight.device
    for length in (1, 2, 3):  # prompts of several lengths, then steps at several positions
        generate(fast, torch.zeros(1, length, dtype=torch.long, device=device), 3)
    if log:
        log(f"compiled for generation in {time.perf_counter() - start:.1f} s (once per process)")
    return fast

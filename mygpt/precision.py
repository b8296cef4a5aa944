"""Precision for inference (bfloat16 or int8 weights) and for training (bfloat16 autocast).

At batch 1, generation reads every weight once per token, so its speed is the bytes per
weight: float32 reads 4, bfloat16 2, int8 1 (plus one scale per output row).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .devices import has_native_bfloat16
from .model import GPTModel

PRECISIONS = ("float32", "bfloat16", "int8", "auto")


def auto_precision(device: torch.device) -> str:
    """The fastest precision on `device` whose quality bench/precision.py found within bounds."""
    if device.type == "cpu" and hasattr(torch, "_weight_int8pack_mm"):
        return "int8"
    if device.type == "cuda" and has_native_bfloat16(device):
        return "bfloat16"
    return "float32"


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights, one float scale per output row (symmetric).

    Activations stay in floating point: only the weights are stored in 8 bits, and each row
    is dequantized inside the matmul kernel.
    """

    def __init__(self, weight: Tensor, scales: Tensor, bias: Tensor | None):
        super().__init__()
        self.register_buffer("weight", weight)  # (out, in) int8
        self.register_buffer("scales", scales)  # (out,)
        self.register_buffer("bias", bias)  # (out,) or None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        w = linear.weight.detach().float()
        scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127  # the largest weight maps to 127
        weight = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        return cls(weight, scales.to(torch.bfloat16), bias)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x2d = x.reshape(-1, shape[-1]).to(torch.bfloat16)
        if hasattr(torch, "_weight_int8pack_mm"):  # PyTorch's weight-only int8 kernel
            y = torch._weight_int8pack_mm(x2d, self.weight, self.scales)
        else:  # the same maths, slower, for a PyTorch without that kernel
            y = F.linear(x2d, self.weight.to(torch.bfloat16)) * self.scales
        y = y.to(x.dtype).reshape(*shape[:-1], -1)
        return y if self.bias is None else y + self.bias.to(x.dtype)


def for_inference(model: GPTModel, precision: str = "float32") -> GPTModel:
    """A copy of `model` ready for `generate`, in eval mode, with weights in `precision`.

    "bfloat16" stores every weight in bfloat16; "int8" stores the Linear layers (the output
    head included) in int8 and keeps embeddings and norms in float32; "auto" picks for the
    model's device (`auto_precision`). The model passed in is left unchanged.

    int8 is weight-only. PyTorch's dynamic quantization (torch.ao, deprecated) was faster on a
    2-core Xeon, but it quantizes the activations per forward pass, so a row's tokens would
    depend on the other rows of the batch and on whether the KV cache is used.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    device = next(model.parameters()).device
    if precision == "auto":
        precision = auto_precision(device)
    out = copy.deepcopy(model).eval()  # deepcopy keeps a tied head tied
    if precision == "float32":
        return out.float()
    if precision == "bfloat16":
        return out.to(torch.bfloat16)
    out.float()
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear.from_linear(child).to(device))
    return out

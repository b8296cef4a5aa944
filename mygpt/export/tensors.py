"""What both formats want from a GPTModel: float32 CPU tensors and one fused QKV projection."""

from __future__ import annotations

import torch
from torch import Tensor

from mygpt.model import TransformerBlock


def plain(t: Tensor) -> Tensor:
    """A float32, contiguous CPU copy, detached from autograd and from any shared storage."""
    return t.detach().to("cpu", torch.float32).contiguous().clone()


def fused_qkv(block: TransformerBlock) -> tuple[Tensor, Tensor]:
    """Query, key and value stacked as GPT-2's c_attn: weight (3 d, d) and bias (3 d), d = emb_dim.

    A model without qkv biases gets zeros: both formats require the bias, and zeros add nothing.
    """
    att = block.att
    weight = torch.cat([att.W_query.weight, att.W_key.weight, att.W_value.weight])
    if att.W_query.bias is None:
        bias = weight.new_zeros(weight.shape[0])
    else:
        bias = torch.cat([att.W_query.bias, att.W_key.bias, att.W_value.bias])
    return plain(weight), plain(bias)

"""Device and precision choices shared by both scripts."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial

import torch

from .errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES = ("float32", "bfloat16")


def pick_device(name: str = "auto") -> torch.device:
    """`auto` takes cuda, then mps, then cpu; a named device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: Apple's MPS backend is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device; use one of {DEVICE_CHOICES}") from None


def make_autocast(
    device: torch.device, dtype: str = "float32"
) -> Callable[[], AbstractContextManager]:
    """A factory of contexts running matmuls in `dtype` (weights and optimizer stay float32)."""
    if dtype == "float32":
        return nullcontext
    if dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--dtype bfloat16: this GPU does not support it")
    return partial(torch.autocast, device_type=device.type, dtype=getattr(torch, dtype))


def allow_tf32(enabled: bool) -> None:
    """TF32 matmuls on Ampere+ GPUs: ~10-bit mantissas, several times the float32 speed."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled

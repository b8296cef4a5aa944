"""Device choice shared by both scripts."""

from __future__ import annotations

import torch

from .errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


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

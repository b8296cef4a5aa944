"""Checks before a training run does any work: the output folder, the disk, the memory.

A run that will fail at the end (nowhere to save) or be killed (out of memory) should fail in
its first second, saying why, with nothing trained and lost.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from .config import GPTConfig
from .errors import UserError

GB = 1e9
_TORCH_OVERHEAD = int(0.8 * GB)  # the process itself: PyTorch's libraries and allocator


def check_output_dir(path: Path) -> None:
    """The folder exists or can be made, and a file can be written in it."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--output-dir {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".mygpt-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"--output-dir {path}: cannot write there ({e.strerror})") from None


def n_parameters(cfg: GPTConfig, tied: bool = False) -> int:
    """Parameters of a GPTModel of this shape (as num_parameters() counts them; tested)."""
    # Counted, not built: even on the meta device, nn.Embedding's normal_ init imports
    # torch._dynamo, 4-5 s before a run could report a mistake.
    d, L, V, T = cfg.emb_dim, cfg.n_layers, cfg.vocab_size, cfg.context_length
    per_block = 4 * d * d + 2 * 4 * d * d  # query, key, value, out_proj; the feed-forward
    per_block += (3 * d if cfg.qkv_bias else 0) + d + 4 * d + d  # their biases
    per_block += 2 * 2 * d  # two LayerNorms, scale and shift
    return V * d + T * d + L * per_block + 2 * d + (0 if tied else V * d)


def files_bytes(n_params: int, checkpoints: bool) -> int:
    """Disk a run writes: model.safetensors, the plot, and checkpoint.pt with AdamW's two moments
    (twice while a new one replaces the old)."""
    model = 4 * n_params
    return model + 2 * 2**20 + (2 * 3 * model if checkpoints else 0)


def check_disk(path: Path, n_params: int, checkpoints: bool) -> None:
    """Room in the output folder for the files the run will write."""
    need = files_bytes(n_params, checkpoints)
    free = shutil.disk_usage(path).free
    if free < need:
        raise UserError(
            f"--output-dir {path}: {free / GB:.2f} GB free, the run writes {need / GB:.2f} GB "
            f"(model{', checkpoints' if checkpoints else ''})"
        )


def training_bytes(cfg: GPTConfig, n_params: int, batch_size: int, dtype: str = "float32") -> int:
    """Estimated peak memory of a training step: weights, gradients and AdamW's two moments
    (4 x 4 bytes a parameter), the activations kept for the backward pass, and the logits.

    Activations: about 68 bytes per token, layer and embedding dimension in float32 (half of
    that in bfloat16), after Korthikanti et al. (2022); the logits, their softmax and their
    gradient are 3 float32 numbers per token and vocabulary entry.
    """
    tokens = batch_size * cfg.context_length
    per_element = 34 if dtype == "bfloat16" else 68
    activations = tokens * cfg.n_layers * cfg.emb_dim * per_element
    logits = 3 * 4 * tokens * cfg.vocab_size
    return 16 * n_params + activations + logits + _TORCH_OVERHEAD


def available_memory(device: torch.device) -> int | None:
    """Bytes the run can still allocate on `device`; None where it cannot be known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kib = next(int(line.split()[1]) for line in meminfo.splitlines()
                   if line.startswith("MemAvailable:"))  # fmt: skip
        return 1024 * kib
    except (OSError, StopIteration, ValueError):
        return None


def check_memory(
    cfg: GPTConfig, n_params: int, batch_size: int, dtype: str, device: torch.device
) -> None:
    """The model, AdamW and a batch's activations fit in the device's free memory."""
    need = training_bytes(cfg, n_params, batch_size, dtype)
    free = available_memory(device)
    if free is not None and need > free:
        raise UserError(
            f"the run needs about {need / GB:.1f} GB of memory on {device.type}, "
            f"{free / GB:.1f} GB is free: use a smaller model or --batch-size (with --grad-accum "
            "for the same batch), or --no-memory-check if you know better"
        )

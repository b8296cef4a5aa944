"""Checks before a training run does any work: the output folder, the disk, the memory.

A run that will fail at the end (nowhere to save) or be killed (out of memory) should fail in
its first second, saying why, with nothing trained and lost.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mygpt.config import GPTConfig
from mygpt.errors import UserError
from mygpt.lora import SUGGESTED_RANK, TARGETS

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


def files_bytes(n_params: int, checkpoints: bool, n_trained: int | None = None) -> int:
    """Disk a run writes: model.safetensors, the plot, and checkpoint.pt with the trained
    weights and AdamW's two moments (twice while a new one replaces the old); a LoRA run
    (`n_trained` adapter parameters) also adapter.safetensors, and only adapters in checkpoints."""
    trained = 4 * (n_params if n_trained is None else n_trained)
    adapter = 0 if n_trained is None else trained
    return 4 * n_params + adapter + 2 * 2**20 + (2 * 3 * trained if checkpoints else 0)


def check_disk(path: Path, n_params: int, checkpoints: bool, n_trained: int | None = None) -> None:
    """Room in the output folder for the files the run will write."""
    need = files_bytes(n_params, checkpoints, n_trained)
    free = shutil.disk_usage(path).free
    if free < need:
        raise UserError(
            f"--output-dir {path}: {free / GB:.2f} GB free, the run writes {need / GB:.2f} GB "
            f"(model{', checkpoints' if checkpoints else ''})"
        )


@dataclass(frozen=True)
class Plan:
    """How a run trains, as far as memory goes: all weights or LoRA adapters, the frozen
    weights' storage, and whether blocks recompute their activations."""

    lora_rank: int | None = None
    lora_targets: tuple[str, ...] = ()
    base_bytes: int = 4  # per frozen Linear weight: 4 float32, 2 bfloat16
    checkpointing: bool = False

    def flags(self) -> str:
        """The command-line flags of this plan."""
        words = [f"--lora-rank {self.lora_rank}"] if self.lora_rank else []
        words += ["--base-dtype bfloat16"] if self.base_bytes == 2 else []
        return " ".join(words + (["--activation-checkpointing"] if self.checkpointing else []))


def lora_parameters(cfg: GPTConfig, rank: int, targets: tuple[str, ...]) -> int:
    """Parameters of rank-`rank` adapters on `targets` of every block (tested against lora)."""
    d = cfg.emb_dim
    widths = {
        "query": 2 * d,
        "key": 2 * d,
        "value": 2 * d,
        "out_proj": 2 * d,
        "ff_in": 5 * d,
        "ff_out": 5 * d,
    }  # in + out features
    return cfg.n_layers * rank * sum(widths[name] for name in targets)


def training_bytes(
    cfg: GPTConfig, tied: bool, batch_size: int, dtype: str = "float32", plan: Plan = Plan()
) -> int:
    """Estimated peak memory of a training step: the weights, and for each trained one its
    gradient and AdamW's two moments (4 x 4 bytes); the activations kept for the backward
    pass; the logits.

    Activations: about 68 bytes per token, layer and embedding dimension in float32 (half of
    that in bfloat16), after Korthikanti et al. (2022); with checkpointing, each block's input
    (4 bytes) and one block's activations at a time. The logits, their softmax and their
    gradient are 3 float32 numbers per token and vocabulary entry. A LoRA run ends by merging
    the adapters into a float32 copy of the matrices beside the base: that may be its peak.
    """
    n_params = n_parameters(cfg, tied)
    head = 0 if tied else cfg.vocab_size * cfg.emb_dim
    matrices = cfg.n_layers * 12 * cfg.emb_dim**2 + head  # the Linear layers' weights
    if plan.lora_rank:
        weights = 16 * lora_parameters(cfg, plan.lora_rank, plan.lora_targets)
        weights += plan.base_bytes * matrices + 4 * (n_params - matrices)
    else:
        weights = 16 * n_params
    tokens = batch_size * cfg.context_length
    per_element = 34 if dtype == "bfloat16" else 68
    if plan.checkpointing:
        activations = tokens * cfg.emb_dim * (4 * cfg.n_layers + per_element)
    else:
        activations = tokens * cfg.n_layers * cfg.emb_dim * per_element
    logits = 3 * 4 * tokens * cfg.vocab_size
    step = weights + activations + logits
    merge = weights + 4 * matrices if plan.lora_rank else 0
    return max(step, merge) + _TORCH_OVERHEAD


def available_memory(device: torch.device) -> int | None:
    """Bytes the run can still allocate on `device`; None where it cannot be known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kib = next(
            int(line.split()[1])
            for line in meminfo.splitlines()
            if line.startswith("MemAvailable:")
        )
        return 1024 * kib
    except (OSError, StopIteration, ValueError):
        return None


def check_memory(
    cfg: GPTConfig,
    tied: bool,
    batch_size: int,
    dtype: str,
    device: torch.device,
    plan: Plan = Plan(),
) -> None:
    """The weights, AdamW and a batch's activations fit in the device's free memory; if not,
    the message names the LoRA settings that would fit, where some do."""
    need = training_bytes(cfg, tied, batch_size, dtype, plan)
    free = available_memory(device)
    if free is None or need <= free:
        return
    fits = next(
        (
            p
            for p in _smaller_plans(plan, cfg)
            if training_bytes(cfg, tied, batch_size, dtype, p) <= free
        ),
        None,
    )
    advice = "use a smaller model or --batch-size (with --grad-accum for the same batch)"
    if fits:
        about = training_bytes(cfg, tied, batch_size, dtype, fits) / GB
        advice = f"{fits.flags()} fits (about {about:.1f} GB); or {advice}"
    raise UserError(
        f"the run needs about {need / GB:.1f} GB of memory on {device.type}, "
        f"{free / GB:.1f} GB is free: {advice}, or --no-memory-check if you know better"
    )


def _smaller_plans(plan: Plan, cfg: GPTConfig) -> list[Plan]:
    """The plans that keep what `plan` has and add one saving after another: LoRA (with the
    book's rank on every target), its bfloat16 base, activation checkpointing."""
    rank = plan.lora_rank or min(SUGGESTED_RANK, cfg.emb_dim)
    lora = replace(plan, lora_rank=rank, lora_targets=plan.lora_targets or tuple(TARGETS))
    steps = [lora, replace(lora, base_bytes=2), replace(lora, base_bytes=2, checkpointing=True)]
    return [p for p in steps if p != plan]

"""Model weights on disk: safetensors with the GPTConfig in its metadata."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import GPTConfig
from .model import GPTModel


def save_model(model: GPTModel, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write weights, config and any extra metadata atomically (a temporary file renamed)."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.out_head.weight is model.tok_emb.weight:
        del state["out_head.weight"]  # tied: safetensors refuses shared storage, and it is a copy
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, tmp, metadata={**(metadata or {}), "config": json.dumps(asdict(model.cfg))})
    os.replace(tmp, path)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a file written by `save_model`, without reading its tensors."""
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def load_model(path: str | Path, device: torch.device | str = "cpu") -> GPTModel:
    """A GPTModel, in eval mode, from a file written by `save_model`."""
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        cfg = GPTConfig(**json.loads(f.metadata()["config"]))
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    model = GPTModel(cfg).to(device)
    tied = "out_head.weight" not in state
    if tied:
        model.out_head.weight = model.tok_emb.weight
        state["out_head.weight"] = state["tok_emb.weight"]
    model.load_state_dict(state)
    return model.eval()

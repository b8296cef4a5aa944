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


def save_model(model: GPTModel, path: str | Path) -> Path:
    """Write weights and config atomically (a temporary file renamed into place)."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.out_head.weight is model.tok_emb.weight:
        del state["out_head.weight"]  # tied: safetensors refuses shared storage, and it is a copy
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, tmp, metadata={"config": json.dumps(asdict(model.cfg))})
    os.replace(tmp, path)
    return path


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

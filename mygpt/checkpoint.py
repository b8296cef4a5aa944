"""Files of trained models: safetensors weights with their GPTConfig, and training checkpoints."""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import GPTConfig
from .errors import UserError
from .files import check_readable, write_atomically
from .model import GPTModel


def save_model(model: GPTModel, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write weights, config and any extra metadata atomically (a temporary file renamed)."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.is_tied:
        del state["out_head.weight"]  # tied: safetensors refuses shared storage, and it is a copy
    metadata = {**(metadata or {}), "config": json.dumps(asdict(model.cfg))}
    return write_atomically(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a file written by `save_model`, without reading its tensors."""
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def load_model(
    path: str | Path,
    device: torch.device | str = "cpu",
    linear_dtype: torch.dtype = torch.float32,
) -> GPTModel:
    """A GPTModel, in eval mode, from a file written by `save_model`; read a tensor at a time,
    its Linear matrices stored in `linear_dtype` (see pretrained.load_gpt2)."""
    # pread, not mmap: mapped pages of the file would count in the process's memory (RSS) for
    # as long as any tensor from it lives, a second copy of the model beside the loaded one.
    with safe_open(str(path), framework="pt", device=str(device), backend="pread") as f:
        cfg = GPTConfig(**json.loads(f.metadata()["config"]))
        state = {k: as_stored(k, f.get_tensor(k), linear_dtype) for k in f.keys()}  # noqa: SIM118
    return model_from_state(cfg, state).eval()


def as_stored(name: str, tensor: torch.Tensor, linear_dtype: torch.dtype) -> torch.Tensor:
    """`tensor` in `linear_dtype` if it is a Linear layer's matrix, else as it is."""
    is_matrix = tensor.dim() == 2 and not name.startswith(("tok_emb.", "pos_emb."))
    return tensor.to(linear_dtype) if is_matrix else tensor


def model_from_state(cfg: GPTConfig, state: dict[str, torch.Tensor]) -> GPTModel:
    """A GPTModel holding `state`'s tensors (no random init); its head tied if the state's is.

    A state is tied when it has no out_head.weight (save_model) or shares tok_emb's storage
    (a tied model's state_dict, also after torch.save and torch.load).
    """
    state = dict(state)
    head, emb = state.get("out_head.weight"), state["tok_emb.weight"]
    tied = head is None or head.untyped_storage().data_ptr() == emb.untyped_storage().data_ptr()
    if tied:
        state["out_head.weight"] = emb
    with torch.device("meta"):
        model = GPTModel(cfg)
    model.load_state_dict(state, assign=True)
    return model.tie_weights() if tied else model


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write a training checkpoint (Trainer.state_dict() and more) atomically."""
    return write_atomically(Path(path), lambda tmp: torch.save(checkpoint, tmp))


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A training checkpoint, read without unpickling code (weights_only)."""
    check_readable(path)
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a checkpoint file") from None
    except Exception as e:  # whatever a damaged file makes the reader raise, it is damaged
        raise UserError(f"{path}: damaged or not a PyTorch checkpoint ({_reason(e)})") from None
    if not isinstance(checkpoint, dict) or not {"model", "config"} <= checkpoint.keys():
        raise UserError(f"{path}: not a MyGPT training checkpoint")
    return checkpoint


def _reason(e: Exception) -> str:
    """The first sentence of an exception's message, for a one-line error."""
    if isinstance(e, pickle.UnpicklingError):
        return "its pickled data cannot be read"  # PyTorch adds a long weights_only advice
    first = str(e).strip().split("\n")[0].split(". ")[0]
    return first[:120] or type(e).__name__


def load_trained_model(
    path: str | Path,
    device: torch.device | str = "cpu",
    linear_dtype: torch.dtype = torch.float32,
) -> GPTModel:
    """A GPTModel from weights written by v1: model.safetensors or a training checkpoint."""
    path = Path(path)
    check_readable(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(16)
    if path.suffix == ".safetensors" or magic[8:9] == b"{":  # a safetensors header is JSON
        try:
            return load_model(path, device, linear_dtype)
        except (KeyError, OSError, ValueError, TypeError, SafetensorError) as e:
            raise UserError(
                f"{path}: damaged or not weights saved by MyGPT ({_reason(e)})"
            ) from None
    ckpt = load_checkpoint(path, device)
    if "lora" in ckpt:
        raise UserError(
            f"{path}: a LoRA run's checkpoint holds only its adapters; use the run's "
            "model.safetensors (base and adapters merged), or its adapter.safetensors with "
            "--lora-adapter on its base weights"
        )
    state = {k: as_stored(k, v, linear_dtype) for k, v in ckpt["model"].items()}
    return model_from_state(GPTConfig(**ckpt["config"]), state).eval()

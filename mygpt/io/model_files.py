"""model.safetensors: a model's weights with its GPTConfig, written whole and read checked."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mygpt.config import GPTConfig
from mygpt.errors import NonFiniteError, UserError
from mygpt.io.files import write_atomically
from mygpt.model import GPTModel


def save_model(model: GPTModel, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write weights, config and any extra metadata atomically (a temporary file renamed)."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.is_tied:
        del state["out_head.weight"]  # tied: safetensors refuses shared storage, and it is a copy
    if bad := nonfinite_tensor(state):
        raise NonFiniteError(f"{path}: not written: {bad} holds nan or infinite values")
    metadata = {**(metadata or {}), "config": json.dumps(asdict(model.cfg))}
    return write_atomically(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def nonfinite_tensor(state: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating tensor of `state` with a nan or infinite value, or None."""
    return next(
        (k for k, t in state.items() if t.is_floating_point() and not t.isfinite().all()), None
    )


def check_finite(model: GPTModel, where: str) -> GPTModel:
    """`model`, or a UserError where a weight is nan or infinite: it cannot score or generate."""
    if bad := nonfinite_tensor(model.state_dict()):
        raise UserError(f"{where}: its weights are not finite ({bad} holds nan or infinite values)")
    return model


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a file written by `save_model`, without reading its tensors."""
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def read_model(
    path: str | Path,
    device: torch.device | str = "cpu",
    linear_dtype: torch.dtype = torch.float32,
) -> GPTModel:
    """A GPTModel, in eval mode, from a file written by `save_model`; read a tensor at a time,
    its Linear matrices stored in `linear_dtype` (see io.gpt2.load_gpt2)."""
    # pread, not mmap: mapped pages of the file would count in the process's memory (RSS) for
    # as long as any tensor from it lives, a second copy of the model beside the loaded one.
    with safe_open(str(path), framework="pt", device=str(device), backend="pread") as f:
        metadata = f.metadata() or {}
        if "lora" in metadata and "config" not in metadata:
            raise UserError(
                f"{path}: a LoRA adapter, not a model: give its base weights, "
                "and this file as --lora-adapter"
            )
        cfg = GPTConfig.from_dict(json.loads(metadata["config"]))
        slices = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118
        check_tensors(
            cfg, {k: (tuple(v.get_shape()), v.get_dtype() in FLOATS) for k, v in slices.items()}
        )
        state = {k: as_stored(k, f.get_tensor(k), linear_dtype) for k in f.keys()}  # noqa: SIM118
    return model_from_state(cfg, state).eval()


FLOATS = ("F32", "F16", "BF16", "F64")  # safetensors' names of the dtypes weights may have

Layout = dict[str, tuple[tuple[int, ...], bool]]  # a file's tensors: name -> (shape, is float)


def check_tensors(cfg: GPTConfig, tensors: Layout) -> None:
    """A file's tensors are the weights of `cfg`: every name, shape and a floating dtype,
    checked before anything is read or built; else a ValueError that says what differs."""
    layers = {int(m[1]) for name in tensors if (m := re.match(r"trf_blocks\.(\d+)\.", name))}
    if layers != set(range(cfg.n_layers)):  # before a model of n_layers is even on meta
        raise ValueError(f"its config says {cfg.n_layers} layers, its tensors have {len(layers)}")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPTModel(cfg).state_dict().items()}
    if "out_head.weight" not in tensors:
        del expected["out_head.weight"]  # tied to tok_emb
    if missing := sorted(expected.keys() - tensors.keys()):
        raise ValueError(f"it has no tensor {missing[0]}")
    if extra := sorted(tensors.keys() - expected.keys()):
        raise ValueError(f"it has an unexpected tensor {extra[0]}")
    for name, want in expected.items():
        shape, is_float = tensors[name]
        if shape != want:
            raise ValueError(f"its tensor {name} is {shape}; its config makes it {want}")
        if not is_float:
            raise ValueError(f"its tensor {name} is not floating point")


def as_stored(name: str, tensor: torch.Tensor, linear_dtype: torch.dtype) -> torch.Tensor:
    """`tensor` in `linear_dtype` if it is a Linear layer's matrix, else in float32 (what
    norms, biases and embeddings compute in; a file may hold float16)."""
    is_matrix = tensor.dim() == 2 and not name.startswith(("tok_emb.", "pos_emb."))
    return tensor.to(linear_dtype if is_matrix else torch.float32)


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

"""checkpoint.pt, described once: its fields and format version, its one writer and reader.

What --resume needs to continue a run bit for bit: the weights (a LoRA run's adapters only),
the optimizer, the position in the data, every process's random state and the run's flags.
Files without a format number are read too: `run` written since RunConfig, `args` before it.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mygpt.config import GPTConfig
from mygpt.errors import UserError
from mygpt.io.files import check_readable, write_atomically
from mygpt.io.model_files import check_tensors, nonfinite_tensor
from mygpt.lora import AdapterInfo

FORMAT = 2  # 1: files before this field (with `run`, or with `args` before RunConfig)


@dataclass(frozen=True)
class Checkpoint:
    """The contents of checkpoint.pt, typed; `to_dict` is what torch.save writes."""

    model: dict[str, Tensor]  # the weights, or a LoRA run's adapters
    config: GPTConfig  # the model's shape
    optimizer: dict[str, Any] | None = None  # AdamW's state_dict
    state: dict[str, Any] | None = None  # TrainState's fields: step, epoch, position, losses
    data: dict[str, int] | None = None  # what the data must still be (Trainer's signature)
    rng: list[dict[str, Tensor]] | None = None  # every process's random state, by rank
    run: dict[str, Any] | None = None  # RunConfig.to_dict(): the run's flags
    lora: AdapterInfo | None = None  # a LoRA run's adapters: rank, alpha, targets, base
    tokenizer: str | None = None  # tokenizer_to_text of a trained tokenizer; None: GPT-2's
    args: dict[str, Any] | None = None  # format 1 before RunConfig: the flat flags
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        """Plain types and tensors only, so that torch.load reads it with weights_only."""
        saved = {f.name: getattr(self, f.name) for f in fields(self)}
        saved["config"] = asdict(self.config)
        saved["lora"] = self.lora.to_dict() if self.lora else None
        return {k: v for k, v in saved.items() if v is not None}

    @classmethod
    def from_dict(cls, saved: object, path: str | Path) -> Checkpoint:
        """A file's contents, checked: its shape against its tensors, its values finite."""
        if not isinstance(saved, dict) or not {"model", "config"} <= saved.keys():
            raise UserError(f"{path}: not a MyGPT training checkpoint")
        try:
            known = {f.name for f in fields(cls)}
            values = {k: v for k, v in saved.items() if k in known}
            values["format"] = saved.get("format", 1)
            values["config"] = GPTConfig.from_dict(saved["config"])
            if values.get("lora") is not None:
                values["lora"] = AdapterInfo.from_dict(saved["lora"])
            checkpoint = cls(**values)
            checkpoint._check()
        except (ValueError, TypeError, KeyError) as e:
            raise UserError(f"{path}: damaged or not a MyGPT training checkpoint ({e})") from None
        return checkpoint

    def _check(self) -> None:
        model = self.model
        if not isinstance(model, dict) or not all(torch.is_tensor(t) for t in model.values()):
            raise ValueError("its model is not a dict of tensors")
        if self.lora is None:
            check_tensors(
                self.config, {k: (tuple(t.shape), t.is_floating_point()) for k, t in model.items()}
            )
            if bad := nonfinite_tensor(model):
                raise ValueError(f"{bad} holds nan or infinite values")
        if self.format > FORMAT:
            raise ValueError(f"format {self.format}, written by a newer MyGPT than this one")

    def require_resumable(self, path: str | Path) -> None:
        """--resume needs the run's state and flags, not only its weights."""
        if (self.run is None and self.args is None) or self.state is None:
            raise UserError(f"{path}: not a checkpoint of this script")


def write_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    """checkpoint.pt, atomically (a temporary file renamed)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # Python's writes: a full disk's OSError is then kept
            torch.save(checkpoint.to_dict(), f)

    return write_atomically(Path(path), write)


def read_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", resume: bool = False
) -> Checkpoint:
    """checkpoint.pt, read without unpickling code (weights_only), checked; with `resume`,
    first that it holds a run to continue (its flags), not only weights."""
    saved = _read(path, device)
    if resume and isinstance(saved, dict) and not {"run", "args"} & saved.keys():
        raise UserError(f"{path}: not a checkpoint of this script")
    return Checkpoint.from_dict(saved, path)


def _read(path: str | Path, device: torch.device | str) -> object:
    check_readable(path)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a checkpoint file") from None
    except Exception as e:  # whatever a damaged file makes the reader raise, it is damaged
        raise UserError(f"{path}: damaged or not a PyTorch checkpoint ({reason(e)})") from None


def reason(e: Exception) -> str:
    """The first sentence of an exception's message, for a one-line error."""
    if isinstance(e, pickle.UnpicklingError):
        return "its pickled data cannot be read"  # PyTorch adds a long weights_only advice
    first = str(e).strip().split("\n")[0].split(". ")[0]
    return first[:120] or type(e).__name__


# Earlier releases' functions, on plain dicts.


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint given as a dict (`Checkpoint.to_dict()`'s shape) atomically."""
    return write_checkpoint(Checkpoint.from_dict(checkpoint, path), path)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint as the dict torch.save wrote, checked as `read_checkpoint` checks it."""
    return read_checkpoint(path, device).to_dict()

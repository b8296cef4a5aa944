"""The one loader: a GPT-2 size (downloaded once), a folder in OpenAI's or the hub's layout, a
MyGPT model.safetensors or checkpoint.pt, or any of them with a LoRA adapter on top.

Every command loads through here: chat, export, and train's --init-from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import tiktoken
import torch
from safetensors import SafetensorError

from mygpt.config import GPT2_SIZES, GPTConfig, gpt2_config
from mygpt.errors import UserError
from mygpt.io.checkpoint import read_checkpoint, reason
from mygpt.io.files import check_readable
from mygpt.io.gpt2 import RetryPolicy, default_models_dir, download_gpt2, load_gpt2
from mygpt.io.gpt2.convert import folder_config
from mygpt.io.gpt2.download import download_size
from mygpt.io.model_files import (
    as_stored,
    check_finite,
    model_from_state,
    read_metadata,
    read_model,
)
from mygpt.lora import (
    LoRASettings,
    apply_lora,
    check_base,
    fingerprint,
    load_adapter_state,
    merged,
    read_adapter,
)
from mygpt.model import GPTModel
from mygpt.settings import as_paths, setting
from mygpt.tokenizer import get_tokenizer, tokenizer_from_text, tokenizer_of

MODEL = "model"  # the group of v1's --help


@dataclass(frozen=True)
class DownloadSettings:
    """Where GPT-2 sizes come from: --models-dir, --base-url and --source of both scripts."""

    models_dir: Path | None = setting(
        None,
        f"download cache (default: $MYGPT_MODELS_DIR or {default_models_dir()})",
        group=MODEL,
        metavar="DIR",
    )
    base_url: str | None = setting(
        None,
        "download from a server with the same layout: {URL}/{size}/{file} "
        "({URL}/{repo}/resolve/main/{file} with --source hf)",
        group=MODEL,
        metavar="URL",
    )
    source: str = setting(
        "openai",
        "openai: OpenAI's TensorFlow checkpoint; hf: the Hugging Face hub's safetensors",
        group=MODEL,
        choices=("openai", "hf"),
    )
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        as_paths(self, "models_dir")


def gpt2_folder(size: str, download: DownloadSettings, log: Callable[[str], None] = print) -> Path:
    """The local folder of a GPT-2 size, downloaded (and announced) unless already complete."""
    n_bytes = None if download.base_url else download_size(size, download.source)
    approx = f" (≈{n_bytes / 1e6:.0f} MB)" if n_bytes else ""
    return download_gpt2(
        size,
        download.models_dir,
        download.base_url,
        download.source,
        download.retry,
        on_start=lambda: log(
            f"Downloading model weights for the {size} parameter model{approx}...\n"
        ),
    )


def source_config(source: str) -> tuple[GPTConfig, bool] | None:
    """The shape of the weights at `source` and whether their head is tied, known before
    downloading or loading them: a GPT-2 size's, a folder's; None for files and the unknown."""
    if source in GPT2_SIZES:
        return gpt2_config(source, drop_rate=0.0, qkv_bias=True), True
    path = Path(source)
    return folder_config(path) if path.is_dir() else None


def load_model(
    source: str | Path,
    device: torch.device | str = "cpu",
    linear_dtype: torch.dtype = torch.float32,
    *,
    adapter: str | Path | None = None,
    download: DownloadSettings = DownloadSettings(),
    log: Callable[[str], None] = print,
    expect: Literal["any", "folder", "file"] = "any",
) -> GPTModel:
    """The model at `source` in eval mode, with `adapter`'s LoRA updates merged in if given.

    It carries `origin` (a line saying where its weights came from) and `template` (the prompt
    template its file records: "alpaca" after instruction tuning, else "none") and `tokenizer`
    (the one it was trained with, recorded in its file; GPT-2's by default). `expect`
    "folder" or "file" takes `source` as that kind only (v2's --checkpoint-dir, --checkpoint);
    `linear_dtype` stores the Linear matrices in another dtype (a LoRA run's frozen base).
    """
    model, origin = _load(source, device, download, log, expect, linear_dtype)
    tokenizer = tokenizer_of(model)  # what its file records, else GPT-2's
    model = check_finite(model, str(source))
    if adapter is not None:
        model = _with_adapter(model, source, adapter)
        origin = f"{origin} with the LoRA adapter {adapter}"
    model.origin, model.template, model.tokenizer = origin, _template(source), tokenizer
    return model.eval()


def source_tokenizer(source: str | Path) -> tiktoken.Encoding:
    """The tokenizer a model was trained with: what its model.safetensors or checkpoint.pt
    records, else (GPT-2's sizes and folders, files before tokenizers were recorded) GPT-2's.
    A file that cannot be read gives GPT-2's too: loading it then says what is wrong."""
    path = Path(source)
    if str(source) in GPT2_SIZES or not path.is_file():
        return get_tokenizer()
    try:
        if _is_safetensors(path):
            return tokenizer_from_text(read_metadata(path).get("tokenizer"))
        return tokenizer_from_text(read_checkpoint(path, "cpu").tokenizer)
    except (UserError, SafetensorError, OSError, ValueError, KeyError, TypeError):
        return get_tokenizer()


def _is_safetensors(path: Path) -> bool:
    """A .safetensors name, or a safetensors header (JSON after its 8-byte length) inside."""
    with open(path, "rb") as f:
        magic = f.read(16)
    return path.suffix == ".safetensors" or magic[8:9] == b"{"


def load_weights(
    source: str | Path,
    device: torch.device | str = "cpu",
    download: DownloadSettings = DownloadSettings(),
    log: Callable[[str], None] = print,
    expect: Literal["any", "folder", "file"] = "any",
    linear_dtype: torch.dtype = torch.float32,
) -> tuple[GPTModel, str]:
    """Earlier releases' loader: `load_model`'s model and its origin line."""
    model = load_model(source, device, linear_dtype, download=download, log=log, expect=expect)
    return model, model.origin


def _with_adapter(model: GPTModel, source: str | Path, adapter: str | Path) -> GPTModel:
    """`model` with the adapter file's updates folded in, once it is known to be their base."""
    info, tensors = read_adapter(adapter)
    check_base(info, fingerprint(model), str(source), f"--lora-adapter {adapter}")
    with torch.random.fork_rng(devices=[]):  # the adapters' random start is overwritten
        apply_lora(model, LoRASettings().with_adapter(info))
    load_adapter_state(model, tensors)
    return merged(model)


def _template(source: str | Path) -> str:
    """The prompt template a model file records (v1 writes "alpaca" after instruction data)."""
    path = Path(source)
    if not (path.suffix == ".safetensors" and path.is_file()):
        return "none"
    try:
        return read_metadata(path).get("template", "none")
    except (SafetensorError, OSError, ValueError):  # not our file: loading it says why
        return "none"


def _load(source, device, download, log, expect, linear_dtype) -> tuple[GPTModel, str]:
    if str(source) in GPT2_SIZES and expect == "any":
        folder = gpt2_folder(str(source), download, log)
        return load_gpt2(folder, device, linear_dtype), f"OpenAI's GPT-2 {source} ({folder})"
    path = Path(source)  # load_gpt2 and load_trained_model refuse a pipe or a device
    if not path.exists() and expect == "any":
        raise UserError(f"{source}: no such file or folder (GPT-2 sizes: {', '.join(GPT2_SIZES)})")
    if expect == "folder" or (expect == "any" and path.is_dir()):
        return load_gpt2(path, device, linear_dtype), f"the GPT-2 checkpoint folder {path}"
    return read_trained_model(path, device, linear_dtype), str(path)


def reshaped(model: GPTModel, context_length: int, drop_rate: float) -> GPTModel:
    """The same weights with a context of its first `context_length` positions and dropout."""
    if context_length > model.cfg.context_length:
        raise ValueError(f"context {context_length} > the model's {model.cfg.context_length}")
    cfg = replace(model.cfg, context_length=context_length, drop_rate=drop_rate)
    state = model.state_dict(keep_vars=False)
    state["pos_emb.weight"] = state["pos_emb.weight"][:context_length].clone()
    if model.is_tied:
        del state["out_head.weight"]
    return model_from_state(cfg, state).train(model.training)


def read_trained_model(
    path: str | Path,
    device: torch.device | str = "cpu",
    linear_dtype: torch.dtype = torch.float32,
) -> GPTModel:
    """A GPTModel from weights written by v1: model.safetensors or a training checkpoint."""
    path = Path(path)
    check_readable(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if _is_safetensors(path):
        try:
            model = read_model(path, device, linear_dtype)
            model.tokenizer = tokenizer_from_text(read_metadata(path).get("tokenizer"))
            return model
        except (KeyError, OSError, ValueError, TypeError, SafetensorError) as e:
            raise UserError(
                f"{path}: damaged or not weights saved by MyGPT ({reason(e)})"
            ) from None
    ckpt = read_checkpoint(path, device)
    if ckpt.lora is not None:
        raise UserError(
            f"{path}: a LoRA run's checkpoint holds only its adapters; use the run's "
            "model.safetensors (base and adapters merged), or its adapter.safetensors with "
            "--lora-adapter on its base weights"
        )
    state = {k: as_stored(k, v, linear_dtype) for k, v in ckpt.model.items()}
    model = model_from_state(ckpt.config, state).eval()
    model.tokenizer = tokenizer_from_text(ckpt.tokenizer)
    return model

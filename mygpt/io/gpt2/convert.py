"""Load GPT-2 weights (OpenAI's TF checkpoint or the hub's safetensors) into a GPTModel.

The first load converts the folder into `mygpt.safetensors` beside the source files; later loads
read only that file, which is fast and needs no TensorFlow.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from mygpt.config import GPTConfig
from mygpt.errors import UserError
from mygpt.io.files import check_readable
from mygpt.io.model_files import model_from_state, read_metadata, read_model, save_model
from mygpt.model import GPTModel

CONVERTED = "mygpt.safetensors"
TF_SOURCES = ("hparams.json", "model.ckpt.index", "model.ckpt.data-00000-of-00001")
HF_SOURCES = ("config.json", "model.safetensors")


def load_gpt2(
    checkpoint_dir: str | Path,
    device: torch.device | str = "cpu",
    linear_dtype: torch.dtype = torch.float32,
) -> GPTModel:
    """A GPTModel in eval mode from a folder in OpenAI's layout (or the hub's), any shape.

    Read a tensor at a time; `linear_dtype` is the storage of the Linear matrices (bfloat16:
    the frozen base of a LoRA run, never held in float32 whole; such a model runs once
    `lora.apply_lora` has wrapped them).
    """
    folder = Path(checkpoint_dir)
    check_readable(folder)
    sources = _sources(folder)
    for name in sources:
        check_readable(folder / name)
    missing = [name for name in sources if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder}: not a GPT-2 checkpoint folder (missing {', '.join(missing)})")
    stats = {name: (folder / name).stat() for name in sources}
    fingerprint = json.dumps({name: [s.st_size, s.st_mtime_ns] for name, s in stats.items()})
    converted = folder / CONVERTED
    if converted.is_file():
        try:
            if read_metadata(converted).get("source") == fingerprint:
                return read_model(converted, device, linear_dtype)
        except (SafetensorError, OSError, ValueError, KeyError, RuntimeError):
            pass  # unreadable or from other weights: convert again below
    with _variables(folder, sources) as (variables, hparams):
        model = gpt2_from_params(variables, hparams, linear_dtype)
    if linear_dtype != torch.float32:
        return model.to(device)  # the converted file holds the exact float32 weights
    try:
        save_model(model, converted, metadata={"source": fingerprint})
    except OSError as e:  # a read-only folder still loads, only without the fast path next time
        message = f"could not save {converted} ({e.strerror}); converting on every start"
        warnings.warn(message, stacklevel=2)
    return model.to(device)


def folder_config(folder: Path) -> tuple[GPTConfig, bool] | None:
    """The shape of the weights in a GPT-2 checkpoint folder, from its config.json or
    hparams.json, and whether the head is tied; None where the folder does not say."""
    try:
        hparams, tied = _hparams(folder, _sources(folder))
        return _config(hparams), tied
    except UserError:
        return None  # the loader says what is wrong with it


def _sources(folder: Path) -> tuple[str, ...]:
    """The files of the folder's layout: the hub's where it has model.safetensors, else OpenAI's."""
    return HF_SOURCES if (folder / HF_SOURCES[1]).exists() else TF_SOURCES


def _hparams(folder: Path, sources: tuple[str, ...]) -> tuple[dict, bool]:
    """The folder's hyperparameters in OpenAI's names, and whether its head is tied; a
    UserError names the file and what is wrong in it."""
    path = folder / sources[0]
    try:
        values = json.loads(path.read_bytes())
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are
        raise UserError(f"{path}: not valid JSON ({str(e)[:80]})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: holds {type(values).__name__}, not a JSON object")
    try:
        if sources != HF_SOURCES:
            hparams, tied = values, True
        else:
            hparams, tied = _hf_hparams(values), values.get("tie_word_embeddings", True)
            if type(tied) is not bool:
                raise ValueError(f"tie_word_embeddings is {tied!r}, not true or false")
        _config(hparams)
    except KeyError as e:
        raise UserError(f"{path}: has no {e.args[0]}") from None
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    return hparams, tied


def _config(hparams: dict) -> GPTConfig:
    """GPT-2's shape from OpenAI's hyperparameter names, with biases on q, k and v; a
    ValueError names a value that is not a positive integer."""
    keys = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
    for key in keys:
        value = hparams[key]
        if type(value) is not int or value < 1:  # not a bool, a float or text
            raise ValueError(f"{key} is {json.dumps(value)}, not a positive integer")
    vocab, ctx, embd, head, layer = (hparams[key] for key in keys)
    if embd % head:
        raise ValueError(f"n_embd {embd} is not divisible by n_head {head}")
    return GPTConfig(
        vocab_size=vocab,
        context_length=ctx,
        emb_dim=embd,
        n_heads=head,
        n_layers=layer,
        drop_rate=0.0,
        qkv_bias=True,
    )


class Variables:
    """Checkpoint variables by OpenAI's names (wte, h0/attn/c_attn/w, ...), each read from
    its file when taken, so that a conversion holds one float32 array at a time."""

    def __init__(self, read: Callable[[str], np.ndarray], names: dict[str, str]):
        self._read, self._names = read, dict(names)  # OpenAI's name -> the file's

    @classmethod
    def of(cls, arrays: dict[str, np.ndarray]) -> Variables:
        return cls(arrays.__getitem__, {name: name for name in arrays})

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def take(self, name: str) -> np.ndarray:
        return self._read(self._names.pop(name))

    def left(self) -> list[str]:
        return sorted(self._names)


@contextmanager
def _variables(folder: Path, sources: tuple[str, ...]) -> Iterator[tuple[Variables, dict]]:
    """The folder's variables, read lazily, and its hyperparameters (OpenAI's names)."""
    hparams, tied = _hparams(folder, sources)
    if sources == HF_SOURCES:
        with safe_open(str(folder / "model.safetensors"), framework="numpy", backend="pread") as f:
            yield Variables(f.get_tensor, _hf_names(f.keys(), tied)), hparams
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = read_tf_checkpoint(folder, Path(tmp))
        with safe_open(str(out), framework="numpy", backend="pread") as f:
            names = {name.removeprefix("model/"): name for name in f.keys()}  # noqa: SIM118
            yield Variables(f.get_tensor, names), hparams


def read_tf_checkpoint(folder: Path, out_dir: Path) -> Path:
    """The TF checkpoint in `folder` as one safetensors file in `out_dir`, written by
    TensorFlow in a child process."""
    script = Path(__file__).with_name("tf_checkpoint.py")
    out = out_dir / "variables.safetensors"
    done = subprocess.run(
        [sys.executable, str(script), str(folder), str(out)], capture_output=True, text=True
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"{folder}: TensorFlow could not read the checkpoint: {last}")
    return out


def _hf_hparams(config: dict) -> dict:
    """The hub's config.json in OpenAI's names (a KeyError for a missing one)."""
    ctx = "n_ctx" if "n_ctx" in config else "n_positions"
    return {
        "n_vocab": config["vocab_size"],
        "n_ctx": config[ctx],
        "n_embd": config["n_embd"],
        "n_head": config["n_head"],
        "n_layer": config["n_layer"],
    }


def _hf_names(names: Iterable[str], tied: bool = True) -> dict[str, str]:
    """OpenAI's name for each hub name (optional "transformer." prefix): h.0.ln_1.weight is
    h0/ln_1/g. An untied head (tie_word_embeddings false, as MyGPT exports the book's model)
    is "lm_head"; a tied head's copy and the causal-mask buffers are not weights."""
    ours = {}
    for hub in names:
        name = hub.removeprefix("transformer.")
        if name == "lm_head.weight" and not tied:
            ours["lm_head"] = hub
            continue
        if name == "lm_head.weight" or re.fullmatch(r"h\.\d+\.attn\.(masked_)?bias", name):
            continue
        name = re.sub(r"^h\.(\d+)\.", r"h\1/", name).replace(".", "/")
        is_norm = "ln_" in name
        name = re.sub(r"/weight$", "/g" if is_norm else "/w", name)
        name = re.sub(r"/bias$", "/b", name)
        ours[name.removesuffix("/w") if name in ("wte/w", "wpe/w") else name] = hub
    return ours


def _hf_params(tensors: dict[str, np.ndarray], tied: bool = True) -> dict[str, np.ndarray]:
    """Hub-named arrays under OpenAI's names (see _hf_names)."""
    return {ours: tensors[hub] for ours, hub in _hf_names(tensors, tied).items()}


def gpt2_from_params(
    params: dict[str, np.ndarray] | Variables,
    hparams: dict,
    linear_dtype: torch.dtype = torch.float32,
) -> GPTModel:
    """Build a GPTModel from OpenAI-named arrays (wte, wpe, h0/attn/c_attn/w, ..., ln_f/g),
    its Linear matrices stored in `linear_dtype`."""
    cfg = _config(hparams)
    variables = params if isinstance(params, Variables) else Variables.of(params)
    d = cfg.emb_dim

    def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in variables:
            raise UserError(f"checkpoint has no variable {name!r}")
        array = variables.take(name)
        if array.ndim == len(shape) + 1 and array.shape[0] == 1:
            array = array[0]  # OpenAI's conv1d weights are (1, in, out)
        if array.shape != shape:
            raise UserError(f"variable {name!r} has shape {array.shape}, expected {shape}")
        return array

    def tensor(array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(dtype)

    def linear(prefix: str, n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Conv1D stores (in, out); nn.Linear wants (out, in).
        w, b = take(f"{prefix}/w", (n_in, n_out)).T, take(f"{prefix}/b", (n_out,))
        return tensor(w, linear_dtype), tensor(b)

    state = {
        "tok_emb.weight": tensor(take("wte", (cfg.vocab_size, d))),
        "pos_emb.weight": tensor(take("wpe", (cfg.context_length, d))),
    }
    for i in range(cfg.n_layers):
        h, b = f"h{i}/", f"trf_blocks.{i}."
        qkv_w, qkv_b = take(h + "attn/c_attn/w", (d, 3 * d)), take(h + "attn/c_attn/b", (3 * d,))
        for name, w, bias in zip(
            ("W_query", "W_key", "W_value"),
            np.split(qkv_w, 3, axis=1),
            np.split(qkv_b, 3),
            strict=True,
        ):
            state[b + f"att.{name}.weight"] = tensor(w.T, linear_dtype)
            state[b + f"att.{name}.bias"] = tensor(bias)
        for ours, theirs, n_in, n_out in (
            ("att.out_proj", "attn/c_proj", d, d),
            ("ff.layers.0", "mlp/c_fc", d, 4 * d),
            ("ff.layers.2", "mlp/c_proj", 4 * d, d),
        ):
            state[b + ours + ".weight"], state[b + ours + ".bias"] = linear(h + theirs, n_in, n_out)
        for ours, theirs in (("norm1", "ln_1"), ("norm2", "ln_2")):
            state[b + ours + ".scale"] = tensor(take(h + theirs + "/g", (d,)))
            state[b + ours + ".shift"] = tensor(take(h + theirs + "/b", (d,)))
    state["final_norm.scale"] = tensor(take("ln_f/g", (d,)))
    state["final_norm.shift"] = tensor(take("ln_f/b", (d,)))
    if "lm_head" in variables:
        state["out_head.weight"] = tensor(take("lm_head", (cfg.vocab_size, d)), linear_dtype)
    qkv_biases = [k for k in state if k.endswith(("W_query.bias", "W_key.bias", "W_value.bias"))]
    if not any(state[k].any() for k in qkv_biases):
        # All zero: how GPT-2's format holds a model without them (the book's qkv_bias=False).
        cfg = replace(cfg, qkv_bias=False)
        for k in qkv_biases:
            del state[k]
    if variables.left():
        raise UserError(f"checkpoint has unexpected variables: {', '.join(variables.left())}")
    return model_from_state(cfg, state).eval()  # no out_head: tied to wte, as GPT-2's

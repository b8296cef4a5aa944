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
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file

from ..checkpoint import load_model, model_from_state, read_metadata, save_model
from ..config import GPTConfig
from ..errors import UserError
from ..files import check_readable
from ..model import GPTModel

CONVERTED = "mygpt.safetensors"
TF_SOURCES = ("hparams.json", "model.ckpt.index", "model.ckpt.data-00000-of-00001")
HF_SOURCES = ("config.json", "model.safetensors")


def load_gpt2(checkpoint_dir: str | Path, device: torch.device | str = "cpu") -> GPTModel:
    """A GPTModel in eval mode from a folder in OpenAI's layout (or the hub's), any shape."""
    folder = Path(checkpoint_dir)
    check_readable(folder)
    sources = HF_SOURCES if (folder / HF_SOURCES[1]).exists() else TF_SOURCES
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
                return load_model(converted, device)
        except (SafetensorError, OSError, ValueError, KeyError, RuntimeError):
            pass  # unreadable or from other weights: convert again below
    if sources == HF_SOURCES:
        config = json.loads((folder / "config.json").read_text())
        tied = config.get("tie_word_embeddings", True)
        hparams = _hf_hparams(config)
        params = _hf_params(load_file(folder / "model.safetensors"), tied)
    else:
        hparams = json.loads((folder / "hparams.json").read_text())
        params = read_tf_checkpoint(folder)
    model = gpt2_from_params(params, hparams)
    try:
        save_model(model, converted, metadata={"source": fingerprint})
    except OSError as e:  # a read-only folder still loads, only without the fast path next time
        message = f"could not save {converted} ({e.strerror}); converting on every start"
        warnings.warn(message, stacklevel=2)
    return model.to(device)


def read_tf_checkpoint(folder: Path) -> dict[str, np.ndarray]:
    """All variables of the TF checkpoint in `folder`, read by TensorFlow in a child process."""
    script = Path(__file__).with_name("tf_checkpoint.py")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "variables.safetensors"
        done = subprocess.run(
            [sys.executable, str(script), str(folder), str(out)], capture_output=True, text=True
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"{folder}: TensorFlow could not read the checkpoint: {last}")
        return {name.removeprefix("model/"): a for name, a in load_file(out).items()}


def _hf_hparams(config: dict) -> dict:
    return {
        "n_vocab": config["vocab_size"],
        "n_ctx": config.get("n_ctx", config.get("n_positions")),
        "n_embd": config["n_embd"],
        "n_head": config["n_head"],
        "n_layer": config["n_layer"],
    }


def _hf_params(tensors: dict[str, np.ndarray], tied: bool = True) -> dict[str, np.ndarray]:
    """Hub names (optional "transformer." prefix) in OpenAI's form: h.0.ln_1.weight -> h0/ln_1/g.

    An untied head (tie_word_embeddings false, as MyGPT exports the book's model) is "lm_head".
    """
    params = {}
    for name, array in tensors.items():
        name = name.removeprefix("transformer.")
        if name == "lm_head.weight" and not tied:
            params["lm_head"] = array
            continue
        if name == "lm_head.weight" or re.fullmatch(r"h\.\d+\.attn\.(masked_)?bias", name):
            continue  # a tied head's copy and the causal-mask buffers are not weights
        name = re.sub(r"^h\.(\d+)\.", r"h\1/", name).replace(".", "/")
        is_norm = "ln_" in name
        name = re.sub(r"/weight$", "/g" if is_norm else "/w", name)
        name = re.sub(r"/bias$", "/b", name)
        params[name.removesuffix("/w") if name in ("wte/w", "wpe/w") else name] = array
    return params


def gpt2_from_params(params: dict[str, np.ndarray], hparams: dict) -> GPTModel:
    """Build a GPTModel from OpenAI-named arrays (wte, wpe, h0/attn/c_attn/w, ..., ln_f/g)."""
    cfg = GPTConfig(
        vocab_size=hparams["n_vocab"],
        context_length=hparams["n_ctx"],
        emb_dim=hparams["n_embd"],
        n_heads=hparams["n_head"],
        n_layers=hparams["n_layer"],
        drop_rate=0.0,
        qkv_bias=True,
    )
    params = dict(params)
    d = cfg.emb_dim

    def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in params:
            raise UserError(f"checkpoint has no variable {name!r}")
        array = params.pop(name)
        if array.ndim == len(shape) + 1 and array.shape[0] == 1:
            array = array[0]  # OpenAI's conv1d weights are (1, in, out)
        if array.shape != shape:
            raise UserError(f"variable {name!r} has shape {array.shape}, expected {shape}")
        return array

    def linear(prefix: str, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        # Conv1D stores (in, out); nn.Linear wants (out, in).
        return take(f"{prefix}/w", (n_in, n_out)).T, take(f"{prefix}/b", (n_out,))

    state = {
        "tok_emb.weight": take("wte", (cfg.vocab_size, d)),
        "pos_emb.weight": take("wpe", (cfg.context_length, d)),
    }
    for i in range(cfg.n_layers):
        h, b = f"h{i}/", f"trf_blocks.{i}."
        qkv_w, qkv_b = linear(h + "attn/c_attn", d, 3 * d)
        for name, w, bias in zip(
            ("W_query", "W_key", "W_value"), np.split(qkv_w, 3), np.split(qkv_b, 3), strict=True
        ):
            state[b + f"att.{name}.weight"], state[b + f"att.{name}.bias"] = w, bias
        for ours, theirs, n_in, n_out in (
            ("att.out_proj", "attn/c_proj", d, d),
            ("ff.layers.0", "mlp/c_fc", d, 4 * d),
            ("ff.layers.2", "mlp/c_proj", 4 * d, d),
        ):
            state[b + ours + ".weight"], state[b + ours + ".bias"] = linear(h + theirs, n_in, n_out)
        for ours, theirs in (("norm1", "ln_1"), ("norm2", "ln_2")):
            state[b + ours + ".scale"] = take(h + theirs + "/g", (d,))
            state[b + ours + ".shift"] = take(h + theirs + "/b", (d,))
    state["final_norm.scale"] = take("ln_f/g", (d,))
    state["final_norm.shift"] = take("ln_f/b", (d,))
    if "lm_head" in params:
        state["out_head.weight"] = take("lm_head", (cfg.vocab_size, d))
    qkv_biases = [k for k in state if k.endswith(("W_query.bias", "W_key.bias", "W_value.bias"))]
    if not any(state[k].any() for k in qkv_biases):
        # All zero: how GPT-2's format holds a model without them (the book's qkv_bias=False).
        cfg = replace(cfg, qkv_bias=False)
        for k in qkv_biases:
            del state[k]
    if params:
        raise UserError(f"checkpoint has unexpected variables: {', '.join(sorted(params))}")

    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()
    }
    return model_from_state(cfg, tensors).eval()  # no out_head: tied to wte, as GPT-2's

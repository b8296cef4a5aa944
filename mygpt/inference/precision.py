"""Precision for inference: float32, bfloat16 or int8 weights, or `auto`, the fastest here.

At batch 1, generation reads every weight once per token, so its speed is the bytes per
weight: float32 reads 4, bfloat16 2, int8 1 (plus one scale per output row), as far as the
kernels stream at the memory's speed. How far they do differs by CPU kind, so `auto` measures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import torch

from mygpt.devices import machine_signature
from mygpt.inference.fast import FastGPT
from mygpt.io.files import cache_dir, write_atomically
from mygpt.lora import has_lora, merged
from mygpt.model import GPTModel

PRECISIONS = ("float32", "bfloat16", "int8", "auto")
MEASURED = ("float32", "bfloat16", "int8")  # what auto times, the exact one first
AUTO_CACHE = "precision-auto.json"  # in cache_dir(): {machine and shape: choice and speeds}


def for_inference(
    model: GPTModel, precision: str = "float32", log: Callable[[str], object] | None = None
) -> FastGPT:
    """An inference copy of `model` (fast.py) in eval mode, with weights in `precision`.

    "bfloat16" stores every weight in bfloat16; "int8" stores the Linear layers (the output
    head included) in int8 and keeps embeddings and norms in float32; "auto" takes the one
    that generates fastest on this machine (`auto_precision`, which `log` hears). The model
    passed in is left unchanged.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if has_lora(model):
        model = merged(model)
    if precision == "auto":
        precision = auto_precision(model, log)
    return FastGPT(model, precision)


def shape_key(model: GPTModel, device: torch.device) -> str:
    """What a measured speed holds for: this kind of machine and this shape of model."""
    c = model.cfg
    shape = f"{c.n_layers}x{c.emb_dim}/{c.n_heads}h/v{c.vocab_size}"
    return f"{machine_signature(device)} {shape}{' tied' if model.is_tied else ''}"


def decode_rate(model: FastGPT, steps: int = 16) -> float:
    """Tokens per second of greedy batch-1 decoding with the cache, after a short prompt."""
    device = model.tok_emb.weight.device
    cache = model.new_kv_cache()
    ids = torch.arange(8, device=device).unsqueeze(0) % model.cfg.vocab_size
    next_id = model(ids, cache, last_only=True).argmax(-1)
    for _ in range(4):  # warm-up: first calls allocate and pick kernels
        next_id = model(next_id, cache, last_only=True).argmax(-1)
    start = time.perf_counter()
    for _ in range(steps):
        next_id = model(next_id, cache, last_only=True).argmax(-1)
    int(next_id)  # waits for an asynchronous device
    return steps / (time.perf_counter() - start)


def auto_precision(model: GPTModel, log: Callable[[str], object] | None = None) -> str:
    """The precision that decodes fastest for `model`'s shape on this machine: timed once
    (a second or two for 124M), then read from the cache. A lower precision must beat float32."""
    device = model.tok_emb.weight.device
    path, key = cache_dir() / AUTO_CACHE, shape_key(model, device)
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(key)
    if isinstance(entry, dict) and entry.get("precision") in MEASURED:
        return entry["precision"]
    rates = {p: decode_rate(FastGPT(model, p)) for p in MEASURED}
    choice = max(MEASURED, key=lambda p: (rates[p], p == "float32"))
    if log:
        speeds = ", ".join(f"{p} {r:.1f}" for p, r in rates.items())
        log(f"precision auto: {choice}, measured tokens/s: {speeds} (cached in {path})")
    known[key] = {"precision": choice, "tokens_per_s": {p: round(r, 1) for p, r in rates.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda tmp: tmp.write_text(json.dumps(known, indent=1) + "\n"))
    except OSError:
        pass  # a read-only cache costs a new measurement next time, nothing more
    return choice

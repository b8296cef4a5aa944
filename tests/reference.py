"""An independent GPT-2 forward pass in NumPy (float64), on weights in OpenAI's checkpoint layout.

Written straight from the GPT-2 paper and OpenAI's model.py, sharing no code with mygpt, so that
mygpt's logits can be checked against it. Names are OpenAI's: wte, wpe, h{i}/attn/c_attn/w, ...
with Conv1D weights stored (in, out).
"""

from __future__ import annotations

import numpy as np


def _layer_norm(x, g, b, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def gpt2_logits(params: dict[str, np.ndarray], ids: list[int], n_head: int) -> np.ndarray:
    """Logits (T, vocab) for one sequence; the output head is params['out_head'] or wte."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    T = len(ids)
    x = p["wte"][ids] + p["wpe"][:T]
    n_layer = sum(1 for k in p if k.endswith("/attn/c_attn/w"))
    causal = np.tril(np.ones((T, T), dtype=bool))
    for i in range(n_layer):
        h = f"h{i}/"
        a = _layer_norm(x, p[h + "ln_1/g"], p[h + "ln_1/b"])
        qkv = a @ p[h + "attn/c_attn/w"] + p[h + "attn/c_attn/b"]
        q, k, v = np.split(qkv, 3, axis=-1)
        heads = []
        for hq, hk, hv in zip(
            np.split(q, n_head, -1), np.split(k, n_head, -1), np.split(v, n_head, -1), strict=True
        ):
            scores = hq @ hk.T / np.sqrt(hq.shape[-1])
            scores = np.where(causal, scores, -np.inf)
            heads.append(_softmax(scores) @ hv)
        att = np.concatenate(heads, -1) @ p[h + "attn/c_proj/w"] + p[h + "attn/c_proj/b"]
        x = x + att
        m = _layer_norm(x, p[h + "ln_2/g"], p[h + "ln_2/b"])
        m = _gelu(m @ p[h + "mlp/c_fc/w"] + p[h + "mlp/c_fc/b"]) @ p[h + "mlp/c_proj/w"]
        x = x + m + p[h + "mlp/c_proj/b"]
    x = _layer_norm(x, p["ln_f/g"], p["ln_f/b"])
    return x @ p.get("out_head", p["wte"]).T


def openai_layout(state_dict) -> dict[str, np.ndarray]:
    """mygpt's state_dict renamed and reshaped into OpenAI's layout (test-side mapping)."""
    sd = {k: v.detach().double().cpu().numpy() for k, v in state_dict.items()}
    out = {
        "wte": sd["tok_emb.weight"],
        "wpe": sd["pos_emb.weight"],
        "ln_f/g": sd["final_norm.scale"],
        "ln_f/b": sd["final_norm.shift"],
        "out_head": sd["out_head.weight"],
    }
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("trf_blocks."))
    for i in range(n_layer):
        b, h = f"trf_blocks.{i}.", f"h{i}/"
        qkv = ("W_query", "W_key", "W_value")
        out[h + "attn/c_attn/w"] = np.concatenate([sd[b + f"att.{n}.weight"].T for n in qkv], 1)
        d = out[h + "attn/c_attn/w"].shape[0]
        out[h + "attn/c_attn/b"] = np.concatenate(
            [sd.get(b + f"att.{n}.bias", np.zeros(d)) for n in qkv]
        )
        out[h + "attn/c_proj/w"] = sd[b + "att.out_proj.weight"].T
        out[h + "attn/c_proj/b"] = sd[b + "att.out_proj.bias"]
        out[h + "mlp/c_fc/w"] = sd[b + "ff.layers.0.weight"].T
        out[h + "mlp/c_fc/b"] = sd[b + "ff.layers.0.bias"]
        out[h + "mlp/c_proj/w"] = sd[b + "ff.layers.2.weight"].T
        out[h + "mlp/c_proj/b"] = sd[b + "ff.layers.2.bias"]
        for ln, ours in (("ln_1", "norm1"), ("ln_2", "norm2")):
            out[h + f"{ln}/g"] = sd[b + f"{ours}.scale"]
            out[h + f"{ln}/b"] = sd[b + f"{ours}.shift"]
    return out

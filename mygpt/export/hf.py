"""The Hugging Face layout: a folder that transformers' GPT2LMHeadModel and AutoTokenizer load.

Written with safetensors and json alone, so exporting needs no transformers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor

from mygpt.export.tensors import fused_qkv, plain
from mygpt.inference.generate import CHAT_SAMPLING, Sampling
from mygpt.io.files import write_atomically, write_folder_atomically
from mygpt.io.hf_tokenizer import hf_tokenizer, vocab_and_merges
from mygpt.model import GPTModel
from mygpt.tokenizer import ASSETS, ENDOFTEXT, tokenizer_of


def hf_config(model: GPTModel) -> dict:
    """config.json of a GPT2LMHeadModel with this model's shape."""
    cfg, eot = model.cfg, tokenizer_of(model).eot_token
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_ctx": cfg.context_length,  # llama.cpp's converter reads this name
        "n_embd": cfg.emb_dim,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": None,  # 4 * n_embd, as MyGPT's FeedForward
        "activation_function": "gelu_new",  # GELU's tanh approximation, as mygpt.model.GELU
        "layer_norm_epsilon": model.final_norm.eps,
        "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate,
        "attn_pdrop": cfg.drop_rate,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": model.is_tied,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "dtype": "float32",
        "use_cache": True,
    }


def hf_state_dict(model: GPTModel) -> dict[str, Tensor]:
    """The model's weights under GPT2LMHeadModel's names; Conv1D weights are (in, out)."""
    state = {
        "transformer.wte.weight": plain(model.tok_emb.weight),
        "transformer.wpe.weight": plain(model.pos_emb.weight),
        "transformer.ln_f.weight": plain(model.final_norm.scale),
        "transformer.ln_f.bias": plain(model.final_norm.shift),
    }
    for i, block in enumerate(model.trf_blocks):
        h = f"transformer.h.{i}."
        qkv_weight, qkv_bias = fused_qkv(block)
        state[h + "attn.c_attn.weight"] = qkv_weight.T.contiguous()
        state[h + "attn.c_attn.bias"] = qkv_bias
        for theirs, linear in (
            ("attn.c_proj", block.att.out_proj),
            ("mlp.c_fc", block.ff.layers[0]),
            ("mlp.c_proj", block.ff.layers[2]),
        ):
            state[h + theirs + ".weight"] = plain(linear.weight).T.contiguous()
            state[h + theirs + ".bias"] = plain(linear.bias)
        for theirs, norm in (("ln_1", block.norm1), ("ln_2", block.norm2)):
            state[h + theirs + ".weight"] = plain(norm.scale)
            state[h + theirs + ".bias"] = plain(norm.shift)
    if not model.is_tied:
        state["lm_head.weight"] = plain(model.out_head.weight)
    return state


def tokenizer_files(context_length: int, eot: int) -> dict[str, str]:
    """tokenizer_config.json and special_tokens_map.json of a GPT-2 tokenizer whose
    <|endoftext|> is `eot`."""
    special = {"content": ENDOFTEXT, "lstrip": False, "normalized": True, "rstrip": False}
    special |= {"single_word": False, "special": True}
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "add_bos_token": False,
        "bos_token": ENDOFTEXT,
        "eos_token": ENDOFTEXT,
        "unk_token": ENDOFTEXT,
        "added_tokens_decoder": {str(eot): special},
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": context_length,
    }
    tokens_map = {name: ENDOFTEXT for name in ("bos_token", "eos_token", "unk_token")}
    return {
        "tokenizer_config.json": json.dumps(config, indent=2),
        "special_tokens_map.json": json.dumps(tokens_map, indent=2),
    }


def generation_config(sampling: Sampling, eot: int) -> dict:
    """generation_config.json: the end-of-text token and the sampling defaults."""
    config = {"bos_token_id": eot, "eos_token_id": eot}
    config |= {"max_new_tokens": sampling.max_new_tokens, "do_sample": sampling.temperature > 0}
    if sampling.temperature > 0:
        config |= {"temperature": sampling.temperature, "top_k": sampling.top_k or 0}
        config |= {"top_p": sampling.top_p} if sampling.top_p else {}
    if sampling.repetition_penalty != 1.0:
        config["repetition_penalty"] = sampling.repetition_penalty
    return config


def export_hf(model: GPTModel, folder: str | Path, sampling: Sampling = CHAT_SAMPLING) -> Path:
    """Write `folder` in the hub's GPT-2 layout, replacing it whole if it exists.

    generation_config.json gets `sampling`'s settings (default: the chat's).
    """

    def write(tmp: Path) -> None:
        config = hf_config(model)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        tokenizer = tokenizer_of(model)
        gen = generation_config(sampling, tokenizer.eot_token)
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        weights = hf_state_dict(
            model
        )  # safetensors makes its files 0600: write_atomically fixes that
        write_atomically(
            tmp / "model.safetensors", lambda t: save_file(weights, t, metadata={"format": "pt"})
        )
        if tokenizer.name == "gpt2":
            shutil.copyfile(ASSETS / "encoder.json", tmp / "vocab.json")
            shutil.copyfile(ASSETS / "vocab.bpe", tmp / "merges.txt")
        else:  # the same files for a trained one, and its tokenizer.json
            tokens, pairs = vocab_and_merges(tokenizer)
            vocab = {token: i for i, token in enumerate(tokens)}
            (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
            lines = "".join(f"{a} {b}\n" for a, b in pairs)
            (tmp / "merges.txt").write_text("#version: 0.2\n" + lines, "utf-8")
            hf_tokenizer(tokenizer).save(str(tmp / "tokenizer.json"))
        files = tokenizer_files(model.cfg.context_length, tokenizer.eot_token)
        for name, text in files.items():
            (tmp / name).write_text(text + "\n")

    return write_folder_atomically(folder, write)

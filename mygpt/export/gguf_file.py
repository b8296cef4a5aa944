"""GGUF: one file in llama.cpp's `gpt2` architecture, with GPT-2's tokenizer inside.

Written with the `gguf` package (the llama.cpp project's own Python library). Which tensors stay
float32 follows llama.cpp's converter (convert_hf_to_gguf.py): 1-D tensors (norms, biases) and
the position embeddings; a q8_0 matrix whose rows are not whole 32-value blocks falls back to f16.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
from tiktoken_ext.openai_public import r50k_pat_str

from mygpt.errors import UserError
from mygpt.export.tensors import fused_qkv, plain
from mygpt.inference.generate import CHAT_SAMPLING, Sampling
from mygpt.io.files import write_atomically
from mygpt.io.hf_tokenizer import vocab_and_merges
from mygpt.model import GPTModel
from mygpt.tokenizer import gpt2_vocab, tokenizer_of

Q = gguf.GGMLQuantizationType
OUTTYPES: dict[str, tuple[Q, gguf.LlamaFileType]] = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
_KEEP_FLOAT32 = ("position_embd.weight",)


def gguf_tensors(model: GPTModel) -> Iterator[tuple[str, np.ndarray]]:
    """(llama.cpp name, float32 array) for every weight; matrices are (out, in) as nn.Linear's."""

    def named(name: str, t) -> tuple[str, np.ndarray]:
        return name, plain(t).numpy()

    yield named("token_embd.weight", model.tok_emb.weight)
    yield named("position_embd.weight", model.pos_emb.weight)
    for i, block in enumerate(model.trf_blocks):
        b = f"blk.{i}."
        qkv_weight, qkv_bias = fused_qkv(block)
        yield named(b + "attn_norm.weight", block.norm1.scale)
        yield named(b + "attn_norm.bias", block.norm1.shift)
        yield named(b + "attn_qkv.weight", qkv_weight)
        yield named(b + "attn_qkv.bias", qkv_bias)
        for theirs, linear in (
            ("attn_output", block.att.out_proj),
            ("ffn_up", block.ff.layers[0]),
            ("ffn_down", block.ff.layers[2]),
        ):
            yield named(b + theirs + ".weight", linear.weight)
            yield named(b + theirs + ".bias", linear.bias)
        yield named(b + "ffn_norm.weight", block.norm2.scale)
        yield named(b + "ffn_norm.bias", block.norm2.shift)
    yield named("output_norm.weight", model.final_norm.scale)
    yield named("output_norm.bias", model.final_norm.shift)
    if not model.is_tied:  # a tied head is token_embd itself: llama.cpp reuses it
        yield named("output.weight", model.out_head.weight)


def tensor_type(name: str, array: np.ndarray, outtype: str) -> Q:
    """The GGML type a tensor is stored in for this outtype (llama.cpp's converter's rules)."""
    if array.ndim <= 1 or name in _KEEP_FLOAT32:
        return Q.F32
    qtype = OUTTYPES[outtype][0]
    if qtype == Q.Q8_0 and array.shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0]:
        return Q.F16
    return qtype


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer, vocab_size: int) -> None:
    """llama.cpp's "gpt2" tokenizer: byte-level tokens, merges, GPT-2's pre-tokenizer."""
    if tokenizer.name == "gpt2":
        encoder, merges = gpt2_vocab()
        tokens = sorted(encoder, key=encoder.__getitem__)
    elif tokenizer._pat_str != r50k_pat_str:
        raise UserError(
            "GGUF: llama.cpp knows pre-tokenizers by name, and this tokenizer's pattern is not "
            "GPT-2's (mygpt tokenizer train --pattern); export it with --to hf instead"
        )
    else:
        tokens, pairs = vocab_and_merges(tokenizer)
        # llama.cpp refuses a BPE without merges (char's): one whose result is no token
        # changes nothing, as llama.cpp then takes the piece's bytes, as with no merge.
        merges = [f"{a} {b}" for a, b in pairs] or [f"{tokens[0]} {tokens[0]}"]
    if len(tokens) != vocab_size:
        raise ValueError(f"the tokenizer has {len(tokens)} tokens, the model {vocab_size}")
    eot = tokenizer.eot_token
    types = [gguf.TokenType.NORMAL] * len(tokens)
    types[eot] = gguf.TokenType.CONTROL
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eot)
    writer.add_eos_token_id(eot)
    writer.add_add_bos_token(False)  # MyGPT's prompts start with their own first token


def write_gguf(model: GPTModel, path: Path, outtype: str, name: str, progress: bool) -> None:
    """Write the GGUF file at `path` (not atomically: export_gguf wraps this)."""
    cfg = model.cfg
    writer = gguf.GGUFWriter(path, arch="gpt2")
    writer.add_name(name)
    writer.add_context_length(cfg.context_length)
    writer.add_embedding_length(cfg.emb_dim)
    writer.add_feed_forward_length(4 * cfg.emb_dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_head_count(cfg.n_heads)
    writer.add_layer_norm_eps(model.final_norm.eps)
    writer.add_file_type(OUTTYPES[outtype][1])
    _add_tokenizer(writer, tokenizer_of(model), cfg.vocab_size)
    for tensor_name, array in gguf_tensors(model):
        qtype = tensor_type(tensor_name, array, outtype)
        writer.add_tensor(tensor_name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=progress)
    writer.close()


def modelfile(gguf_name: str, context_length: int, sampling: Sampling) -> str:
    """An ollama Modelfile for the .gguf beside it: plain completion, GPT-2's stop token."""
    params: dict[str, float | int | None] = {
        "num_ctx": context_length,  # ollama's default context is longer than GPT-2's positions
        "num_predict": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_k": sampling.top_k,
        "top_p": sampling.top_p,
        "repeat_penalty": sampling.repetition_penalty,
    }
    lines = [f"FROM ./{gguf_name}", 'TEMPLATE """{{ .Prompt }}"""']
    lines += [f"PARAMETER {key} {value}" for key, value in params.items() if value is not None]
    lines += ['PARAMETER stop "<|endoftext|>"']
    return "\n".join(lines) + "\n"


def export_gguf(
    model: GPTModel,
    path: str | Path,
    outtype: str = "f16",
    sampling: Sampling = CHAT_SAMPLING,
    progress: bool = False,
) -> Path:
    """Write `path` (.gguf) and an ollama Modelfile beside it (`path` with suffix .Modelfile).

    The Modelfile gets `sampling`'s settings (default: the chat's); `progress` shows a bar.
    """
    if outtype not in OUTTYPES:
        raise ValueError(f"unknown outtype {outtype!r}; choose one of {', '.join(OUTTYPES)}")
    path = Path(path)
    write_atomically(path, lambda tmp: write_gguf(model, tmp, outtype, path.stem, progress))
    text = modelfile(path.name, model.cfg.context_length, sampling)
    write_atomically(path.with_suffix(".Modelfile"), lambda tmp: tmp.write_text(text))
    return path

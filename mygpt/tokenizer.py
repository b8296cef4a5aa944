"""The GPT-2 tokenizer, built offline from the BPE files shipped in mygpt/assets."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import tiktoken
import torch
from tiktoken_ext.openai_public import r50k_pat_str

ASSETS = Path(__file__).parent / "assets"
ENDOFTEXT = "<|endoftext|>"
ENDOFTEXT_ID = 50256

# The sha256 sums tiktoken checks for OpenAI's published GPT-2 files.
_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


def _read_verified(name: str) -> bytes:
    data = (ASSETS / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != _SHA256[name]:
        raise RuntimeError(f"{ASSETS / name} is corrupt: its sha256 differs from OpenAI's file")
    return data


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the printable stand-in character of each byte."""
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    decoder = {chr(b): b for b in printable}
    others = [b for b in range(256) if b not in decoder.values()]
    decoder.update({chr(256 + n): b for n, b in enumerate(others)})
    return decoder


def gpt2_vocab() -> tuple[dict[str, int], list[str]]:
    """GPT-2's vocabulary as OpenAI published it: token (byte-level text) -> id, and the merges."""
    encoder = json.loads(_read_verified("encoder.json"))
    merges = _read_verified("vocab.bpe").decode().split("\n")[1:-1]  # no "#version", no ""
    return encoder, merges


@cache
def get_tokenizer() -> tiktoken.Encoding:
    """The GPT-2 BPE tokenizer; ids equal tiktoken's "gpt2" encoding, no network needed."""
    encoder, merges = gpt2_vocab()
    byte_of = _byte_decoder()
    # In GPT-2 a token's id is its merge rank: the 256 bytes first, then one id per merge.
    ranks = {bytes(byte_of[c] for c in token): i for token, i in encoder.items()}
    del ranks[ENDOFTEXT.encode()]
    if len(ranks) != 256 + len(merges):
        raise RuntimeError("encoder.json and vocab.bpe do not describe the same vocabulary")
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: ENDOFTEXT_ID},
        explicit_n_vocab=50257,
    )


def text_to_token_ids(text: str, tokenizer: tiktoken.Encoding) -> torch.Tensor:
    """Encode text as a (1, T) LongTensor; "<|endoftext|>" becomes the special token."""
    ids = tokenizer.encode(text, allowed_special={ENDOFTEXT})
    return torch.tensor(ids, dtype=torch.long).unsqueeze(0)


def token_ids_to_text(token_ids: torch.Tensor, tokenizer: tiktoken.Encoding) -> str:
    """Decode a (1, T) or (T,) tensor of ids back to text."""
    return tokenizer.decode(token_ids.reshape(-1).tolist())

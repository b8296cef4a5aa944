"""Tokenizers: GPT-2's BPE, built offline from the files shipped in mygpt/assets; one trained
on your text (bpe.py) or of characters, saved as tiktoken's ranks and a Hugging Face
tokenizer.json, and carried inside a model's file. Each is a tiktoken.Encoding."""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from pathlib import Path

import tiktoken
import torch
from tiktoken_ext.openai_public import r50k_pat_str

from mygpt.errors import UserError

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


# --- your own tokenizers ------------------------------------------------------------------

RANKS_FILE = "tokenizer.tiktoken"  # tiktoken's format: a base64 token and its rank a line
HF_FILE = "tokenizer.json"  # Hugging Face tokenizers' format
INFO_FILE = "mygpt-tokenizer.json"  # its name, kind and pre-tokenizer pattern
TOKENIZER_CHOICES = "gpt2, char, or a folder of `mygpt tokenizer train`"


def make_tokenizer(ranks: dict[bytes, int], kind: str, pattern: str = r50k_pat_str):
    """A tiktoken Encoding of `ranks`, <|endoftext|> the id after them; its name (which
    caches of tokenized text key on) holds the kind, size and a hash of the ranks."""
    digest = hashlib.sha256(pattern.encode())
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        digest.update(rank.to_bytes(4, "little") + token)
    n = len(ranks) + 1
    return tiktoken.Encoding(
        name=f"{kind}-{n}-{digest.hexdigest()[:12]}",
        pat_str=pattern,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: len(ranks)},
        explicit_n_vocab=n,
    )


@cache
def char_tokenizer() -> tiktoken.Encoding:
    """Characters as their UTF-8 bytes: 256 tokens and <|endoftext|>. An ASCII character is
    one token; any other is its 2 to 4 bytes, so no text is ever unknown."""
    return make_tokenizer({bytes([b]): b for b in range(256)}, "char")


def tokenizer_kind(tokenizer: tiktoken.Encoding) -> str:
    """Its kind: gpt2, char or bpe."""
    return "gpt2" if tokenizer.name == "gpt2" else tokenizer.name.split("-")[0]


def load_tokenizer(spec: str | Path) -> tiktoken.Encoding:
    """The tokenizer a --tokenizer names: gpt2, char, or a folder of save_tokenizer's."""
    if str(spec) == "gpt2":
        return get_tokenizer()
    if str(spec) == "char":
        return char_tokenizer()
    folder = Path(spec)
    if not (folder / RANKS_FILE).is_file() or not (folder / INFO_FILE).is_file():
        raise UserError(
            f"--tokenizer {spec}: not a tokenizer ({TOKENIZER_CHOICES}); a folder needs "
            f"{RANKS_FILE} and {INFO_FILE}"
        )
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        lines = (folder / RANKS_FILE).read_text(encoding="ascii").split()
        ranks = {base64.b64decode(t): int(r) for t, r in zip(lines[::2], lines[1::2], strict=True)}
        return make_tokenizer(ranks, info["kind"], info["pattern"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise UserError(f"--tokenizer {spec}: damaged ({e})") from None


def save_tokenizer(tokenizer: tiktoken.Encoding, folder: str | Path) -> Path:
    """The tokenizer as tiktoken's ranks, Hugging Face's tokenizer.json, and its info, in
    `folder` (made if need be)."""
    from mygpt.io.hf_tokenizer import hf_tokenizer  # tokenizers: only where one is written

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ranks = tokenizer._mergeable_ranks
    lines = [f"{base64.b64encode(t).decode()} {r}\n" for t, r in sorted(ranks.items(), key=_rank)]
    (folder / RANKS_FILE).write_text("".join(lines), encoding="ascii")
    hf_tokenizer(tokenizer).save(str(folder / HF_FILE))
    info = {"kind": tokenizer_kind(tokenizer), "pattern": tokenizer._pat_str}
    (folder / INFO_FILE).write_text(json.dumps(info | {"n_vocab": tokenizer.n_vocab}) + "\n")
    return folder


def _rank(item: tuple[bytes, int]) -> int:
    return item[1]


def tokenizer_to_text(tokenizer: tiktoken.Encoding) -> str | None:
    """What a model file keeps of its tokenizer (None for GPT-2's, the default)."""
    if tokenizer.name == "gpt2":
        return None
    ranks = sorted(tokenizer._mergeable_ranks.items(), key=_rank)
    if [r for _, r in ranks] != list(range(len(ranks))):
        raise ValueError("ranks must be 0 .. n-1")
    tokens = [base64.b64encode(t).decode() for t, _ in ranks]
    info = {"kind": tokenizer_kind(tokenizer), "pattern": tokenizer._pat_str, "tokens": tokens}
    return json.dumps(info)


def tokenizer_from_text(text: str | None) -> tiktoken.Encoding:
    """The inverse of tokenizer_to_text."""
    if text is None:
        return get_tokenizer()
    info = json.loads(text)
    ranks = {base64.b64decode(t): i for i, t in enumerate(info["tokens"])}
    return make_tokenizer(ranks, info["kind"], info["pattern"])


def tokenizer_of(model) -> tiktoken.Encoding:
    """The tokenizer a model carries (load_model sets it), GPT-2's for one made in Python."""
    return getattr(model, "tokenizer", None) or get_tokenizer()


def check_same_tokenizer(model_tokenizer, requested, where: str) -> None:
    """A UserError if a model trained with one tokenizer is asked to run with another."""
    if requested is not None and requested.name != model_tokenizer.name:
        raise UserError(
            f"{where} was trained with the tokenizer {model_tokenizer.name}, not "
            f"{requested.name}: its token ids mean other text"
        )

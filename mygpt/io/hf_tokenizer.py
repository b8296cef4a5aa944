"""A tokenizer in Hugging Face's and llama.cpp's terms: GPT-2's byte-level vocabulary (each
byte a printable character) and its merges, as tokenizer.json (the `tokenizers` library)."""

from __future__ import annotations

from functools import cache

import tiktoken
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from mygpt.bpe import merges
from mygpt.tokenizer import ENDOFTEXT, _byte_decoder


@cache
def _byte_encoder() -> dict[int, str]:
    return {b: c for c, b in _byte_decoder().items()}


def byte_level(token: bytes) -> str:
    """A token's bytes as GPT-2's vocab.json writes them ("Ġthe" for b" the")."""
    table = _byte_encoder()
    return "".join(table[b] for b in token)


def vocab_and_merges(tokenizer: tiktoken.Encoding) -> tuple[list[str], list[tuple[str, str]]]:
    """The tokens in id order (<|endoftext|> last) and the merges, in byte-level text."""
    ranks = tokenizer._mergeable_ranks
    tokens = [byte_level(t) for t, _ in sorted(ranks.items(), key=lambda item: item[1])]
    pairs = [(byte_level(a), byte_level(b)) for a, b in merges(ranks)]
    return [*tokens, ENDOFTEXT], pairs


def hf_tokenizer(tokenizer: tiktoken.Encoding) -> Tokenizer:
    """`tokenizer` in the `tokenizers` library: the same ids for any text."""
    tokens, pairs = vocab_and_merges(tokenizer)
    hf = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=pairs))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(tokenizer._pat_str), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(ENDOFTEXT, special=True, normalized=False)])
    return hf

import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SHARED

from mygpt import get_tokenizer, text_to_token_ids, token_ids_to_text


def test_known_ids(tokenizer):
    assert tokenizer.encode("Hello, world") == [15496, 11, 995]
    assert tokenizer.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [50256]
    assert tokenizer.n_vocab == 50257


def test_text_to_token_ids_round_trip(tokenizer):
    ids = text_to_token_ids("Every effort moves you", tokenizer)
    assert ids.dtype == torch.long
    assert ids.tolist() == [[6109, 3626, 6100, 345]]
    assert token_ids_to_text(ids, tokenizer) == "Every effort moves you"
    # The special token's text is read as the special token, as the book's tokenizer does.
    assert text_to_token_ids("a<|endoftext|>b", tokenizer).tolist() == [[64, 50256, 65]]


def test_verdict_has_5145_tokens(tokenizer):
    text = (ROOT / "the-verdict.txt").read_text(encoding="utf-8")
    assert len(tokenizer.encode(text)) == 5145


@pytest.mark.skipif(not (SHARED / "tiktoken-cache").is_dir(), reason="needs ../shared")
@pytest.mark.slow
def test_equals_tiktoken_gpt2():
    """Our offline Encoding gives tiktoken's own "gpt2" ids, on prose, code and odd bytes."""
    code = f"""
import tiktoken
from mygpt import get_tokenizer
ours, theirs = get_tokenizer(), tiktoken.get_encoding("gpt2")
assert ours._mergeable_ranks == theirs._mergeable_ranks
samples = [open({str(ROOT / "the-verdict.txt")!r}, encoding="utf-8").read(),
           "déjà vu 😀 ¿qué?\\n\\n\\tdef f(x):  return x**2  # 3.14159",
           "  leading and trailing  ", "日本語のテキスト", "'s 've 're 'll 'd"]
for s in samples:
    assert ours.encode(s) == theirs.encode(s), s
print("same")
"""
    env = dict(os.environ, TIKTOKEN_CACHE_DIR=str(SHARED / "tiktoken-cache"))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "same", out.stderr


def test_corrupt_asset_is_refused(tmp_path, monkeypatch):
    import mygpt.tokenizer as tok

    for name in ("encoder.json", "vocab.bpe"):
        (tmp_path / name).write_bytes((tok.ASSETS / name).read_bytes())
    with open(tmp_path / "vocab.bpe", "ab") as f:
        f.write(b"x")
    monkeypatch.setattr(tok, "ASSETS", tmp_path)
    get_tokenizer.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="vocab.bpe is corrupt"):
            get_tokenizer()
    finally:
        get_tokenizer.cache_clear()

"""Your own tokenizer: the BPE trainer equals the textbook algorithm, tiktoken's ids equal the
trainer's own encoder, the saved tokenizer.json gives the same ids in Hugging Face's libraries,
compression matches Hugging Face's trainer, and `mygpt tokenizer train`."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import run_in_process
from hypothesis import given, settings
from hypothesis import strategies as st
from pydoc_text import pydoc_text
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from mygpt.bpe import count_words, encode, merges, train_bpe
from mygpt.tokenizer import (
    ENDOFTEXT,
    char_tokenizer,
    load_tokenizer,
    make_tokenizer,
    save_tokenizer,
    tokenizer_from_text,
    tokenizer_to_text,
)

TEXT = pydoc_text()
TRAIN, HELD_OUT = TEXT[:300_000], TEXT[300_000:]


@pytest.fixture(scope="module")
def trained():
    return make_tokenizer(train_bpe(count_words([TRAIN]), 2048), "bpe")


def textbook_bpe(word_counts: Counter, vocab_size: int) -> dict[bytes, int]:
    """The book's chapter 2 bonus, plainly: count every adjacent pair in every word, merge the
    most frequent (the lowest pair of ids among equals), repeat."""
    words = {tuple(w): n for w, n in word_counts.items()}
    vocab = [bytes([b]) for b in range(256)]
    while len(vocab) < vocab_size - 1:
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += n
        if not pairs or max(pairs.values()) < 2:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        joined = vocab[best[0]] + vocab[best[1]]
        new = vocab.index(joined) if joined in vocab else len(vocab)
        if new == len(vocab):
            vocab.append(joined)
        merged = {}
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i : i + 2] == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    return {token: i for i, token in enumerate(vocab)}


def test_the_fast_trainer_equals_the_textbook_algorithm():
    counts = count_words([TRAIN[:30_000]])
    assert train_bpe(counts, 700) == textbook_bpe(counts, 700)


def test_a_small_text_stops_when_no_pair_repeats():
    ranks = train_bpe(count_words(["abc abc"]), 1000)  # words "abc" and " abc"
    assert [t for t in ranks if len(t) > 1] == [b"ab", b"abc"]  # " " + "abc": once only


def test_tiktoken_ids_equal_the_trainers_own_encoder(trained):
    ranks = trained._mergeable_ranks
    assert trained.encode_ordinary(HELD_OUT) == encode(HELD_OUT, ranks)
    assert trained.n_vocab == 2048 and trained.eot_token == 2047
    assert trained.encode(ENDOFTEXT, allowed_special="all") == [2047]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_round_trips_and_tiktoken_agrees(trained, text):
    ids = trained.encode_ordinary(text)
    assert trained.decode(ids) == text
    assert ids == encode(text, trained._mergeable_ranks)
    assert char_tokenizer().decode(char_tokenizer().encode_ordinary(text)) == text


def test_merges_rebuild_the_ranks(trained):
    # GPT-2's merges.txt form: each token after the bytes is the join of an earlier pair.
    ranks = trained._mergeable_ranks
    for (a, b), rank in zip(merges(ranks), range(256, len(ranks)), strict=True):
        assert ranks[a + b] == rank and ranks[a] < rank and ranks[b] < rank


def test_tokenizer_json_gives_the_same_ids_in_hugging_face(trained, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = save_tokenizer(trained, tmp_path / "tok")
    text = HELD_OUT[:20_000] + " héllo wörld 🙂 日本語 'll 're  \n\n x" + ENDOFTEXT + "y"
    ids = trained.encode(text, allowed_special="all")
    assert Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text).ids == ids
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    assert fast(text)["input_ids"] == ids
    assert fast.decode(ids) == text
    assert load_tokenizer(folder).name == trained.name
    assert tokenizer_from_text(tokenizer_to_text(trained)).name == trained.name


def test_compression_is_that_of_hugging_faces_trainer(trained):
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator(
        [TRAIN],
        trainers.BpeTrainer(
            vocab_size=2048,
            special_tokens=[ENDOFTEXT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    n_bytes = len(HELD_OUT.encode())
    ours = n_bytes / len(trained.encode_ordinary(HELD_OUT))
    theirs = n_bytes / len(hf.encode(HELD_OUT).ids)
    assert ours == pytest.approx(theirs, rel=0.01)
    assert ours > 3  # and far from bytes (1) or characters


def test_mygpt_tokenizer_train(tmp_path, monkeypatch, capsys):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text(TRAIN[:100_000])
    lines = [json.dumps({"text": TRAIN[100_000:200_000]})]
    (tmp_path / "corpus" / "b.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "tok"
    args = ["tokenizer", "train", "--data", tmp_path / "corpus", "--vocab-size", "1000"]
    result = run_in_process("mygpt", [*args, "--out", out], monkeypatch, capsys)
    assert result.returncode == 0, result.stderr
    tokenizer = load_tokenizer(out)
    assert tokenizer.n_vocab == 1000
    counts = count_words([TRAIN[:100_000]]) + count_words([TRAIN[100_000:200_000]])
    assert tokenizer._mergeable_ranks == train_bpe(counts, 1000)  # every document, no more
    assert f"Saved {tokenizer.name} to {out}" in result.stdout
    again = run_in_process("mygpt", [*args, "--out", out], monkeypatch, capsys)
    assert again.returncode == 2
    assert again.stderr.strip() == f"error: --out {out}: the folder is not empty"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--kind", "bpe"], "error: --data is required by bpe"),
        (["--data", "x.txt", "--vocab-size", "100"], "error: --vocab-size must be at least 257"),
        (["--data", "nowhere.txt"], "error: nowhere.txt: no such file"),
    ],
)
def test_tokenizer_train_user_errors(tmp_path, monkeypatch, capsys, args, message):
    out = ["--out", tmp_path / "tok"]
    result = run_in_process("mygpt", ["tokenizer", "train", *args, *out], monkeypatch, capsys)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message), result.stderr


def test_words_are_counted_the_same_in_pieces():
    import regex

    from mygpt.bpe import GPT2_PATTERN, _pieces

    text = TEXT[:200_000] + "a\n\nb\n c \n\nd\ne  \n f\n"
    pieces = list(_pieces(text, size=1000))
    assert len(pieces) > 100 and "".join(pieces) == text
    whole = Counter(w.encode() for w in regex.findall(GPT2_PATTERN, text))
    assert (
        sum(
            (Counter(w.encode() for w in regex.findall(GPT2_PATTERN, p)) for p in pieces), Counter()
        )
        == whole
    )

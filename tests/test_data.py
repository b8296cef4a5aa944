import numpy as np
import pytest
import torch
from conftest import ROOT

from mygpt import (
    Corpus,
    DataError,
    GPTDataset,
    TokenWindows,
    create_dataloader,
    get_tokenizer,
    load_corpus,
    read_text,
    split_text,
)


def test_windows_and_shift():
    ds = GPTDataset(list(range(10)), max_length=4, stride=3)
    # Windows start at 0, 3 (a start at 6 would need tokens up to 10 for its last target).
    assert len(ds) == 2
    x, y = ds[1]
    assert x.tolist() == [3, 4, 5, 6]
    assert y.tolist() == [4, 5, 6, 7]


def test_needs_max_length_plus_one_tokens():
    assert len(GPTDataset(list(range(4)), max_length=4, stride=4)) == 0
    assert len(GPTDataset(list(range(5)), max_length=4, stride=4)) == 1


def test_dataloader_on_real_text(tokenizer):
    text = "I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough"
    loader = create_dataloader(text, batch_size=2, max_length=4, stride=4, shuffle=False)
    x, y = next(iter(loader))
    ids = tokenizer.encode(text)
    assert x.tolist() == [ids[0:4], ids[4:8]]
    assert y.tolist() == [ids[1:5], ids[5:9]]
    assert x.dtype == torch.long


def test_reference_run_windows(tokenizer):
    """v1 defaults: 4,612 + 534 tokens give 18 training and 2 validation windows of 256."""
    corpus = load_corpus(ROOT / "the-verdict.txt", tokenizer, 0.9)
    assert (len(corpus.train), len(corpus.val)) == (4612, 534)
    train, val = corpus.windows(context_length=256, stride=256, batch_rows=2)
    assert (len(train), len(val)) == (18, 2)
    text = read_text(ROOT / "the-verdict.txt")
    train_text, val_text = split_text(text, 0.9)
    assert len(train_text) == 18431 and train_text + val_text == text
    assert corpus.train.tolist() == tokenizer.encode(train_text)


def test_token_windows_equal_the_dataset():
    """TokenWindows reads the same windows as the book's GPTDataset, from any array."""
    ids = np.arange(1000, 1100, dtype=np.uint16)
    for length, stride in [(4, 3), (10, 10), (7, 1), (99, 5)]:
        windows, dataset = (
            TokenWindows(ids, length, stride),
            GPTDataset(ids.tolist(), length, stride),
        )
        assert len(windows) == len(dataset)
        picks = [len(dataset) - 1, 0, len(dataset) // 2]
        x, y = windows.batch(picks)
        assert x.dtype == torch.long and x.shape == (3, length)
        assert x.tolist() == [dataset[i][0].tolist() for i in picks]
        assert y.tolist() == [dataset[i][1].tolist() for i in picks]
    assert len(TokenWindows(ids[:4], 4, 1)) == 0 and len(TokenWindows(ids[:5], 4, 1)) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "is empty"),
        (b"  \n\t ", "is empty"),
        (b"caf\xe9 au lait", "not UTF-8 text (invalid byte at offset 3)"),
    ],
)
def test_read_text_errors(tmp_path, content, message):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_text(path)


def _windows(text, batch_rows, length=32):
    train_text, val_text = split_text(text, 0.9)
    encode = get_tokenizer().encode
    corpus = Corpus(np.array(encode(train_text)), np.array(encode(val_text)))
    return corpus.windows(length, length, batch_rows)


def test_too_short_parts_are_reported():
    with pytest.raises(DataError, match="training part has 9 tokens"):
        _windows("one two three four five six seven eight nine ten", 2, length=16)
    text = "word " * 200  # the last 100 characters: " word" 20 times and a trailing " "
    with pytest.raises(DataError, match="validation part has 21 tokens"):
        _windows(text, batch_rows=1)
    # 400 words: 360 training tokens make 11 windows of 32, not a full batch of 16.
    with pytest.raises(
        DataError, match="gives 11 window.s. of 32 tokens, fewer than one batch of 16"
    ):
        _windows(text * 2, batch_rows=16)

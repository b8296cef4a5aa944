import pytest
import torch
from conftest import ROOT

from mygpt import DataError, GPTDataset, create_dataloader, read_text, split_text, train_val_loaders


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


def test_reference_run_loaders(tokenizer):
    """v1 defaults: 4,612 + 534 tokens give 9 training batches of 2 x 256 and 1 validation batch."""
    text = read_text(ROOT / "the-verdict.txt")
    train, val = train_val_loaders(text, batch_size=2, max_length=256, stride=256)
    assert (len(train), len(val)) == (9, 1)
    assert (len(train.dataset), len(val.dataset)) == (18, 2)
    train_text, val_text = split_text(text, 0.9)
    assert len(train_text) == 18431 and train_text + val_text == text


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


def test_too_short_parts_are_reported():
    with pytest.raises(DataError, match="training part has 9 tokens"):
        train_val_loaders("one two three four five six seven eight nine ten", 2, 16, 16)
    text = "word " * 200  # the last 100 characters: " word" 20 times and a trailing " "
    with pytest.raises(DataError, match="validation part has 21 tokens"):
        train_val_loaders(text, batch_size=1, max_length=32, stride=32)
    # 400 words: 360 training tokens make 11 windows of 32, not a full batch of 16.
    with pytest.raises(
        DataError, match="gives 11 window.s. of 32 tokens, fewer than one batch of 16"
    ):
        train_val_loaders(text * 2, batch_size=16, max_length=32, stride=32)

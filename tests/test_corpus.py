"""Corpora on disk: a file or a folder tokenized once into a uint16 file, memory-mapped."""

import errno

import numpy as np
import pytest

import mygpt.data.corpus
import mygpt.data.documents
from mygpt import DataError, load_corpus
from mygpt.tokenizer import ENDOFTEXT_ID

# Lines that start with spaces, blank lines, tabs, non-ASCII letters and a no-break space after
# a newline: the cuts between chunks must not change a single id.
STORY = "".join(
    f"Chapter {i}.\n\n  She said: \u00ab caf\u00e9 {i * 7}\u00bb\t\n"
    f"\u00a0\u00a0 indented {i}\nEnd of line {i}.\n\n\n        code {i}\n\n\u00a0\u00a0 x\n"
    for i in range(400)
)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(mygpt.data.documents, "_CHUNK", 256)  # many cuts in a few kB


def test_folder_becomes_one_token_file(tmp_path, tokenizer, small_chunks):
    books = tmp_path / "books"
    (books / "sub").mkdir(parents=True)
    (books / "b.txt").write_text(STORY)
    (books / "sub" / "a.txt").write_text("The end.<|endoftext|>A second story.\n" * 50)
    (books / "notes.md").write_text("not a .txt: ignored")
    lines = []
    corpus = load_corpus(books, tokenizer, train_ratio=0.9, memmap=True, log=lines.append)

    expected = tokenizer.encode(STORY) + [ENDOFTEXT_ID]  # sorted: b.txt before sub/a.txt
    expected += tokenizer.encode((books / "sub" / "a.txt").read_text(), allowed_special="all")
    tokens = np.fromfile(tmp_path / "books.mygpt-tokens.bin", dtype=np.uint16)
    assert tokens.tolist() == expected
    assert corpus.token_file == tmp_path / "books.mygpt-tokens.bin"
    assert isinstance(corpus.train, np.memmap) and corpus.train.dtype == np.uint16
    split = int(0.9 * len(expected))
    assert corpus.train.tolist() == expected[:split] and corpus.val.tolist() == expected[split:]
    assert lines[0].startswith("Tokenized 0.0 MB into") and f"{len(expected):,} tokens" in lines[0]


def test_token_file_is_reused_until_a_source_changes(tmp_path, tokenizer):
    data = tmp_path / "story.txt"
    data.write_text(STORY)
    lines = []
    load_corpus(data, tokenizer, memmap=True, log=lines.append)
    load_corpus(data, tokenizer, memmap=True, log=lines.append)
    assert lines[0].startswith("Tokenized") and lines[1].startswith("Using the tokens cached in")
    data.write_text(STORY + "One more line.\n")
    corpus = load_corpus(data, tokenizer, memmap=True, log=lines.append)
    assert lines[2].startswith("Tokenized")
    assert len(corpus.train) + len(corpus.val) == len(tokenizer.encode(STORY + "One more line.\n"))


def test_small_input_stays_in_memory_and_splits_by_characters(tmp_path, tokenizer):
    data = tmp_path / "story.txt"
    data.write_text(STORY)
    corpus = load_corpus(data, tokenizer, train_ratio=0.5)
    assert corpus.token_file is None and not isinstance(corpus.train, np.memmap)
    half = len(STORY) // 2
    assert corpus.train.tolist() == tokenizer.encode(STORY[:half])
    assert not list(tmp_path.glob("*.mygpt-tokens*"))


def test_bad_inputs(tmp_path, tokenizer, small_chunks):
    with pytest.raises(DataError, match="no such file"):
        load_corpus(tmp_path / "missing.txt", tokenizer)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"the folder has no corpus files \(.txt, .parquet, "):
        load_corpus(tmp_path / "empty", tokenizer)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(STORY.encode()[:1000] + b"\xff" + b"more text\n" * 100)
    with pytest.raises(
        DataError, match=r"bad.txt: is not UTF-8 text \(invalid byte at offset 1000\)"
    ):
        load_corpus(bad, tokenizer, memmap=True)
    assert not list(tmp_path.glob("bad.txt.mygpt-tokens*"))  # no partial file left


def test_unwritable_cache_is_one_line(tmp_path, tokenizer, monkeypatch):
    def read_only(*args):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(mygpt.data.corpus, "_tokenize_to_file", read_only)
    (tmp_path / "story.txt").write_text(STORY)
    with pytest.raises(
        DataError,
        match=r"story.txt: cannot make its token file .*tokens\.bin \(Read-only file system\)",
    ):
        load_corpus(tmp_path / "story.txt", tokenizer, memmap=True)

"""Corpora as people download them: Parquet, JSON Lines and JSON documents, alone or mixed in a
folder, give the ids of the same documents as .txt files; bad records are one line."""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, pydoc_text, run_in_process

import mygpt.data.corpus
import mygpt.data.documents
from mygpt import DataError, load_tokens

DOCS = [
    "First document: Python's documentation.\n\n  Indented line.",
    "Second one, with <|endoftext|> inside and caf\u00e9 \u00ab quotes \u00bb.",
    pydoc_text()[:30_000],
    "Last.\n",
]


def write_txt_folder(folder, docs):
    folder.mkdir(parents=True)
    for i, doc in enumerate(docs):  # one file each: <|endoftext|> between files, as between docs
        (folder / f"{i:03d}.txt").write_text(doc)
    return folder


def write_parquet(path, docs, column="text", row_group_size=2):
    table = pa.table({"id": list(range(len(docs))), column: docs})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def write_jsonl(path, docs, field="text"):
    lines = "".join(json.dumps({"id": i, field: d}) + "\n" for i, d in enumerate(docs))
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt") as f:
        f.write(lines)
    return path


def expected_ids(tokenizer, docs):
    return tokenizer.encode("<|endoftext|>".join(docs), allowed_special="all")


@pytest.mark.parametrize("memmap", [False, True])
@pytest.mark.parametrize("kind", ["parquet", "jsonl", "jsonl.gz", "json"])
def test_documents_give_the_ids_of_the_same_text_files(tmp_path, tokenizer, kind, memmap):
    path = tmp_path / f"docs.{kind}"
    if kind == "parquet":
        write_parquet(path, DOCS)
    elif kind == "json":
        path.write_text(json.dumps([{"text": d, "n": 1} for d in DOCS]))
    else:
        write_jsonl(path, DOCS)
    as_text = load_tokens(write_txt_folder(tmp_path / "txt", DOCS), tokenizer, memmap=memmap)
    ids = load_tokens(path, tokenizer, memmap=memmap)
    assert ids.tolist() == as_text.tolist() == expected_ids(tokenizer, DOCS)


def test_a_folder_mixes_them_in_sorted_order_and_the_cache_follows_changes(tmp_path, tokenizer):
    folder = tmp_path / "corpus"
    (folder / "b").mkdir(parents=True)
    write_parquet(folder / "a.parquet", DOCS[:2])
    write_jsonl(folder / "b" / "c.jsonl.gz", DOCS[2:3])
    (folder / "b" / "d.txt").write_text(DOCS[3])
    (folder / "notes.md").write_text("not a corpus file")
    lines = []
    ids = load_tokens(folder, tokenizer, memmap=True, log=lines.append)
    assert ids.tolist() == expected_ids(tokenizer, DOCS)
    assert lines[-1].startswith("Tokenized") and "corpus.mygpt-tokens.bin" in lines[-1]
    assert load_tokens(folder, tokenizer, memmap=True, log=lines.append).tolist() == ids.tolist()
    assert lines[-1].startswith("Using the tokens cached in")
    write_parquet(folder / "a.parquet", ["Changed."] + DOCS[1:2])
    changed = load_tokens(folder, tokenizer, memmap=True, log=lines.append)
    assert lines[-1].startswith("Tokenized")
    assert changed.tolist() == expected_ids(tokenizer, ["Changed.", *DOCS[1:]])


def test_text_is_cut_only_where_tokenization_is_unaffected(tmp_path, tokenizer, monkeypatch):
    """Pieces of a large .txt file give the ids of the whole text, also where blank lines or
    non-ASCII spaces stand before a line (a cut after "\n\n" before "*" would not)."""
    monkeypatch.setattr(mygpt.data.documents, "_CHUNK", 64)
    text = "".join(f"Item {i}.\n\n*x\n\u00a0\nY{i}\n  z\nEnd.\n" for i in range(300))
    (tmp_path / "t.txt").write_text(text)
    ids = load_tokens(tmp_path / "t.txt", tokenizer, memmap=True)
    assert ids.tolist() == tokenizer.encode(text)


def test_text_field_names_another_column(tmp_path, tokenizer):
    write_parquet(tmp_path / "d.parquet", DOCS, column="content")
    ids = load_tokens(tmp_path / "d.parquet", tokenizer, text_field="content")
    assert ids.tolist() == expected_ids(tokenizer, DOCS)


def test_above_the_in_memory_limit_a_corpus_is_memory_mapped(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(mygpt.data.corpus, "IN_MEMORY_LIMIT", 1000)
    path = write_jsonl(tmp_path / "big.jsonl", DOCS)
    corpus = mygpt.data.corpus.load_corpus(path, tokenizer, 0.9)
    assert corpus.token_file == tmp_path / "big.jsonl.mygpt-tokens.bin"
    assert isinstance(corpus.train, np.memmap)
    assert np.concatenate([corpus.train, corpus.val]).tolist() == expected_ids(tokenizer, DOCS)


def bad_inputs(tmp_path):
    write_parquet(tmp_path / "cols.parquet", DOCS, column="content")
    (tmp_path / "broken.jsonl").write_text('{"text": "fine"}\n\n{"text": "no end\n')
    (tmp_path / "number.jsonl").write_text('{"text": "fine"}\n{"text": 42}\n')
    (tmp_path / "chat.jsonl").write_text('{"instruction": "Say hi", "output": "Hi"}\n')
    (tmp_path / "other.json").write_text('[{"text": "a"}, {"body": "b"}]')
    (tmp_path / "empty.jsonl").write_text("\n")
    write_parquet(tmp_path / "null.parquet", ["a", None, "c"])
    (tmp_path / "fake.parquet").write_text("not parquet")
    return [
        (
            "cols.parquet",
            "no column 'text' (its columns: id, content); --text-field names "
            "the one holding the text",
        ),
        ("broken.jsonl", "line 3: not JSON (Invalid control character at column 17)"),
        ("number.jsonl", "line 2: 'text' is int, not a string"),
        ("chat.jsonl", "line 1: an instruction record (instruction, output), not text to train on"),
        (
            "other.json",
            "record 2: no 'text' field (its fields: body); --text-field names the one "
            "holding the text",
        ),
        ("empty.jsonl", "the corpus holds no text"),
        ("null.parquet", "row 2: 'text' is null, not text"),
        ("fake.parquet", "not a Parquet file ("),
    ]


@pytest.mark.parametrize("memmap", [False, True])
def test_bad_records_are_one_line_naming_file_and_place(tmp_path, tokenizer, memmap):
    for name, message in bad_inputs(tmp_path):
        with pytest.raises(DataError) as error:
            load_tokens(tmp_path / name, tokenizer, memmap=memmap)
        assert str(error.value).startswith(f"{tmp_path / name}: {message}"), str(error.value)
    assert not list(tmp_path.glob("*mygpt-tokens*"))  # nothing half-written


def test_v1_refuses_them_before_training(tmp_path, monkeypatch, capsys):
    cases = bad_inputs(tmp_path)
    for name, message in cases[:3]:
        out = tmp_path / "out"
        done = run_in_process(
            ROOT / "MyGPT_v1_local-train.py",
            ["--data", tmp_path / name, "--output-dir", out],
            monkeypatch,
            capsys,
        )
        assert done.returncode == 2 and done.stdout == "" or "Starting" not in done.stdout
        assert done.stderr.startswith(f"error: {tmp_path / name}: {message}")
        assert done.stderr.count("\n") == 1
        assert not (out / "model.safetensors").exists()

"""`mygpt generate`: a file of prompts in, one result line per prompt out, in order; a rerun
continues; bad lines are refused before any generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_in_process

from mygpt import GPTConfig, GPTModel, complete_text
from mygpt.data.instruct import alpaca_prompt
from mygpt.io.model_files import save_model
from mygpt.tokenizer import ENDOFTEXT_ID

CFG = GPTConfig(vocab_size=50257, context_length=64, emb_dim=64, n_heads=4, n_layers=2)
PROMPTS = ["Every effort moves you", "I had always thought Jack Gisburn", "", "The", "x" * 40]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> tuple[GPTModel, Path]:
    torch.manual_seed(0)
    model = GPTModel(CFG).eval()
    with torch.no_grad():  # far-apart logits: greedy tokens do not hang on the last bit
        model.out_head.weight.mul_(20)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(model, path)
    return model, path


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def generate(model_path, inp, out, *flags, monkeypatch, capsys):
    args = ["generate", model_path, "--input", inp, "--output", out, *flags]
    return run_in_process("mygpt", args, monkeypatch, capsys)


GREEDY = ("--temperature", "0", "--max-new-tokens", "12", "--max-batch", "3")


def test_results_are_in_input_order_and_equal_generation_alone(
    model_file, tokenizer, tmp_path, monkeypatch, capsys
):
    model, path = model_file
    records = [{"prompt": p, "id": i} for i, p in enumerate(PROMPTS)]
    records.append({"instruction": "Name a colour.", "input": "", "output": "Blue."})
    inp, out = write_lines(tmp_path / "in.jsonl", records), tmp_path / "out.jsonl"
    result = generate(path, inp, out, *GREEDY, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == len(records)
    for record, line in zip(records, lines, strict=True):
        assert {k: line[k] for k in record} == record  # the input's fields, kept
        assert line["finish_reason"] in ("stop", "length")
        alpaca = "instruction" in record
        text = alpaca_prompt(record) if alpaca else record["prompt"]
        ids = tokenizer.encode(text) or [ENDOFTEXT_ID]
        assert line["prompt_tokens"] == len(ids)
        if not text:  # the chat has no empty prompt; the engine starts from <|endoftext|>
            continue
        # The chat's one-at-a-time path (the book's model, float32) gives the same text.
        stop = ("###",) if alpaca else ()
        expected = complete_text(
            model, tokenizer, text, 12, eos_id=ENDOFTEXT_ID, stop=stop
        ).removeprefix(text)
        assert line["completion"] == expected
        if alpaca:
            assert line["model_response"] == expected.strip()
    assert lines[4]["prompt_tokens"] == len(tokenizer.encode("x" * 40))


def test_a_rerun_continues_after_the_complete_lines(model_file, tmp_path, monkeypatch, capsys):
    _, path = model_file
    inp = write_lines(tmp_path / "in.jsonl", [{"prompt": p} for p in PROMPTS])
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    assert (
        generate(path, inp, full, *GREEDY, monkeypatch=monkeypatch, capsys=capsys).returncode == 0
    )
    lines = full.read_text().splitlines(keepends=True)
    part.write_text(lines[0] + lines[1] + lines[2][:10])  # as if killed while writing line 3
    result = generate(path, inp, part, *GREEDY, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 0 and "after its 2 lines" in result.stdout
    assert part.read_text() == full.read_text()
    again = generate(path, inp, part, *GREEDY, monkeypatch=monkeypatch, capsys=capsys)
    assert again.returncode == 0 and "already holds all 5" in again.stdout


def test_seeded_sampling_does_not_depend_on_the_batch(model_file, tmp_path, monkeypatch, capsys):
    _, path = model_file
    inp = write_lines(tmp_path / "in.jsonl", [{"prompt": p} for p in PROMPTS * 2])
    outputs = []
    for batch in ("1", "7"):
        out = tmp_path / f"out{batch}.jsonl"
        flags = ("--temperature", "1", "--seed", "5", "--max-new-tokens", "9", "--max-batch", batch)
        assert (
            generate(path, inp, out, *flags, monkeypatch=monkeypatch, capsys=capsys).returncode == 0
        )
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1]
    lines = [json.loads(line)["completion"] for line in outputs[0].splitlines()]
    assert lines[0] != lines[5]  # the same prompt on another line: another seed


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a"}\n{"prompt": "b"\n', "line 2: not JSON"),
        ('{"prompt": "a"}\n{"text": "b"}\n', "line 2: no prompt"),
        ('{"prompt": "a"}\n\n', "line 2: not JSON"),
        ('["a"]\n', "line 1: not an object"),
        (
            '{"prompt": "a"}\n{"prompt": "' + "word " * 80 + '"}\n',
            "line 2: the prompt has 81 tokens",
        ),
        ("", "no prompts"),
    ],
)
def test_bad_lines_are_one_error_before_any_generation(
    model_file, tmp_path, content, message, monkeypatch, capsys
):
    _, path = model_file
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(content)
    result = generate(path, inp, out, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_files_and_flags(model_file, tmp_path, monkeypatch, capsys):
    _, path = model_file
    result = generate(
        path, tmp_path / "nope.jsonl", tmp_path / "o.jsonl", monkeypatch=monkeypatch, capsys=capsys
    )
    assert result.returncode == 2 and "nope.jsonl: no such file" in result.stderr
    result = run_in_process("mygpt", ["generate", str(path)], monkeypatch, capsys)
    assert result.returncode == 2 and "--input is required" in result.stderr

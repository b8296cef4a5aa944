"""Instruction fine-tuning as the book's chapter 7 does it: the formatting and the collate equal
the book's code (copied below as the reference), the losses equal an independent NumPy
computation, and the chat's alpaca template round-trips through a model file."""

import io
import json
import shlex
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, run_in_process

from mygpt import GPTConfig, GPTModel
from mygpt.data.instruct import (
    InstructionBatches,
    collate,
    encode_record,
    format_input,
    load_instructions,
    score_responses,
)
from mygpt.inference.chat import ChatSettings, chat
from mygpt.io.model_files import read_metadata

RECORDS = [
    {
        "instruction": "Rewrite the sentence in passive voice.",
        "input": "The cat ate the fish.",
        "output": "The fish was eaten by the cat.",
    },
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris."},
    {"instruction": "Name a prime number.", "output": "Seven."},  # no "input" at all
]


# --- the book's chapter 7 code, as published, for reference ------------------------------------
def book_format_input(entry):
    instruction_text = (
        f"Below is an instruction that describes a task. "
        f"Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry["input"] else ""
    return instruction_text + input_text


def book_custom_collate_fn(
    batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None, device="cpu"
):
    batch_max_length = max(len(item) + 1 for item in batch)
    inputs_lst, targets_lst = [], []
    for item in batch:
        new_item = item.copy()
        new_item += [pad_token_id]
        padded = new_item + [pad_token_id] * (batch_max_length - len(new_item))
        inputs = torch.tensor(padded[:-1])
        targets = torch.tensor(padded[1:])
        mask = targets == pad_token_id
        indices = torch.nonzero(mask).squeeze()
        if indices.numel() > 1:
            targets[indices[1:]] = ignore_index
        if allowed_max_length is not None:
            inputs = inputs[:allowed_max_length]
            targets = targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    return torch.stack(inputs_lst).to(device), torch.stack(targets_lst).to(device)


# ------------------------------------------------------------------------------------------------


def test_the_prompt_is_the_books():
    for entry in RECORDS[:2]:
        assert format_input(entry) == book_format_input(entry)
    assert format_input(RECORDS[2]) == book_format_input({**RECORDS[2], "input": ""})
    assert format_input(RECORDS[0]).endswith("\n\n### Input:\nThe cat ate the fish.")


@pytest.mark.parametrize("max_length", [None, 3, 5])
def test_collate_equals_the_books(max_length):
    batch = [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9], [10, 50256, 11]]  # one holds an end-of-text
    ours = collate(batch, allowed_max_length=max_length)
    theirs = book_custom_collate_fn(batch, allowed_max_length=max_length)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert collate(batch)[1][1].tolist() == [6, 50256, -100, -100, -100]


def np_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
    """Sum of -log softmax at the targets that are not -100, and their number."""
    keep = targets != -100
    z = logits[keep].astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(keep.sum()), targets[keep]].sum()), int(keep.sum())


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPTModel(GPTConfig(context_length=64, emb_dim=32, n_heads=2, n_layers=2)).eval()


@pytest.mark.parametrize("mask_prompt", [False, True])
def test_masked_and_unmasked_losses_equal_numpy(model, tokenizer, mask_prompt):
    batches = InstructionBatches.of(RECORDS, tokenizer, 64, mask_prompt)
    inputs, targets = batches.batch([0, 1, 2])
    for i, entry in enumerate(RECORDS):
        n_prompt = len(tokenizer.encode(format_input(entry)))
        masked = (targets[i, : n_prompt - 1] == -100).all().item()
        assert masked == mask_prompt
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        logits = model(inputs).numpy()
    total, n = np_cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.numpy().ravel())
    assert loss.item() == pytest.approx(total / n, rel=1e-5)


def test_response_score_equals_numpy(model, tokenizer):
    score = score_responses(model, RECORDS, tokenizer)
    total, count = 0.0, 0
    for entry in RECORDS:
        ids, _ = encode_record(entry, tokenizer)
        ids = ids + [50256]
        n_prompt = len(tokenizer.encode(book_format_input({"input": "", **entry})))
        with torch.no_grad():
            logits = model(torch.tensor([ids[:-1]]))[0].numpy()
        targets = np.array(ids[1:])
        targets[: n_prompt - 1] = -100  # every target after the prompt: header, output, end
        s, n = np_cross_entropy(logits, targets)
        total, count = total + s, count + n
    assert score.n_tokens == count
    assert score.loss == pytest.approx(total / count, rel=1e-6)


def test_bad_records_are_one_line(tmp_path, monkeypatch, capsys):
    cases = {
        "missing.json": (
            '[{"instruction": "a", "output": "b"}, {"instruction": "c"}]',
            "record 2: no text 'output'",
        ),
        "notjson.json": ('[{"instruction": "a", "output": ', "not JSON ("),
        "empty.json": ("[]", "the corpus holds no text"),  # no "instruction": read as text
        "lines.jsonl": (
            '{"instruction": "a", "output": "b"}\n{"output": "x", "instruction": 3}\n',
            "line 2: no text 'instruction'",
        ),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        done = run_in_process(
            ROOT / "MyGPT_v1_local-train.py",
            ["--data", tmp_path / name, "--output-dir", tmp_path / "out"],
            monkeypatch,
            capsys,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"error: {tmp_path / name}: {message}"), done.stderr
        assert done.stderr.count("\n") == 1
    assert not (tmp_path / "out" / "model.safetensors").exists()
    with pytest.raises(Exception, match="no instruction records"):
        load_instructions(tmp_path / "empty.json")


@pytest.mark.slow
def test_a_model_fine_tuned_on_instructions_chats_with_its_template(tmp_path, monkeypatch, capsys):
    data = tmp_path / "instructions.json"
    data.write_text(json.dumps(RECORDS * 30))
    done = run_in_process(
        ROOT / "MyGPT_v1_local-train.py",
        [
            "--data",
            data,
            *shlex.split(
                "--emb-dim 32 --n-layers 1 --n-heads 2 --context-length 96 --batch-size 4 "
                "--max-steps 3 --eval-freq 2 --eval-iter 1 --sample-tokens 4 --mask-prompt "
                "--output-dir"
            ),
            tmp_path,
        ],
        monkeypatch,
        capsys,
    )
    assert done.returncode == 0, done.stderr
    sample = [line for line in done.stdout.splitlines() if line.startswith(">>> ")][-1]
    assert sample.startswith(">>> Below is an instruction that describes a task.")
    assert "### Response: " in sample
    weights = tmp_path / "model.safetensors"
    assert read_metadata(weights)["template"] == "alpaca"

    def v2(*args):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Name a prime.\n/show\n")))
        out = run_in_process(
            ROOT / "MyGPT_v2_pretrained.py",
            ["--model", weights, "--temperature", "0", "--max-new-tokens", "4", *args],
            monkeypatch,
            capsys,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    with_template = v2()
    assert "  template: alpaca" in with_template and "MyGPT: Name a prime." not in with_template
    assert "MyGPT: Name a prime." in v2("--template", "none")


def test_the_alpaca_template_prints_the_response_and_stops_at_hashes(tokenizer, capsys):
    """A model that answers "Seven." then "###": the chat shows only "Seven."."""
    from mygpt.inference.generate import Sampling

    answer = tokenizer.encode(" Seven.\n\n### Instruction:")
    cfg = GPTConfig(context_length=128, emb_dim=8, n_heads=1, n_layers=1)

    class Scripted(GPTModel):  # emits `answer`, one token a step, whatever the prompt
        def forward(self, idx, kv_cache=None, last_only=False):
            start = kv_cache.length if kv_cache is not None else 0
            step = start + idx.shape[1] - self.prompt
            logits = torch.full((idx.shape[0], idx.shape[1], cfg.vocab_size), -1e9)
            logits[:, -1, answer[min(max(step, 0), len(answer) - 1)]] = 0.0
            if kv_cache is not None:
                kv_cache.advance(idx.shape[1])
            return logits[:, -1:] if last_only else logits

    model = Scripted(cfg)
    prompt_text = format_input({"instruction": "Name a prime number."}) + "\n\n### Response:\n"
    model.prompt = len(tokenizer.encode(prompt_text))
    settings = ChatSettings(Sampling(max_new_tokens=20, eos_id=50256), template="alpaca")
    chat(model, tokenizer, settings, stdin=io.StringIO("Name a prime number.\n"))
    out = capsys.readouterr().out
    assert "\n> Name a prime number.\nMyGPT:  Seven.\n\n\n> " in out  # no prompt, no "###"
    assert "###" not in out


@pytest.mark.slow
def test_an_instruction_run_resumes_bit_exactly(tmp_path, monkeypatch, capsys):
    data = tmp_path / "instructions.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS * 30))
    flags = [
        "--data",
        data,
        *shlex.split(
            "--emb-dim 32 --n-layers 1 --n-heads 2 --context-length 96 --batch-size 4 "
            "--eval-freq 2 --eval-iter 2 --sample-tokens 3"
        ),
    ]

    def v1(*args):
        done = run_in_process(
            ROOT / "MyGPT_v1_local-train.py", [*flags, *args], monkeypatch, capsys
        )
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if line.startswith("Ep ")]

    whole = v1("--max-steps", "6", "--output-dir", tmp_path / "whole")
    v1("--max-steps", "2", "--save-every", "2", "--output-dir", tmp_path / "part")
    resumed = run_in_process(
        ROOT / "MyGPT_v1_local-train.py",
        ["--resume", tmp_path / "part" / "checkpoint.pt", "--max-steps", "6"],
        monkeypatch,
        capsys,
    )
    assert [ln for ln in resumed.stdout.splitlines() if ln.startswith("Ep ")] == whole[1:]


def test_instruction_data_is_told_by_its_first_record(tmp_path):
    from mygpt.data.instruct import is_instruction_file

    files = {
        "late-key.json": json.dumps(
            [{"output": "x" * 10_000, "instruction": "i"}]
        ),  # key past 4 kB
        "spaced.json": '  [ {"instruction": "i", "output": "o"} ]',
        "quoted.json": json.dumps([{"text": 'a text that says "instruction"'}]),
        "lines.jsonl": '\n{"instruction": "i", "output": "o"}\n',
        "text-first.jsonl": '{"text": "t"}\n{"instruction": "i", "output": "o"}\n',
        "broken.json": '[{"instruction": ',
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    told = {name: is_instruction_file(tmp_path / name) for name in files}
    expected = {
        "late-key.json": True,
        "spaced.json": True,
        "quoted.json": False,
        "lines.jsonl": True,
        "text-first.jsonl": False,
        "broken.json": False,
    }
    assert told == expected

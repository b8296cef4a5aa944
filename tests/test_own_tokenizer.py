"""A model trained with its own tokenizer (--tokenizer DIR or char): the vocabulary follows it,
its files carry it, and everything that reads the model uses it: --resume (with the folder
gone), --init-from, --eval-only, generate, eval and the Hugging Face export; another tokenizer
is refused in one line. llama.cpp's ids: tests/test_llamacpp.py."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import run_in_process
from pydoc_text import pydoc_text

from mygpt import generate, load_model
from mygpt.bpe import count_words, train_bpe
from mygpt.cli.main import main
from mygpt.evaluation.score import score_tokens
from mygpt.export.hf import export_hf
from mygpt.io.checkpoint import read_checkpoint
from mygpt.tokenizer import make_tokenizer, save_tokenizer

SMALL = ["--n-layers", "2", "--emb-dim", "64", "--n-heads", "4", "--context-length", "64"]


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A BPE of 1,000 tokens trained on Python's docs, saved as `mygpt tokenizer train` does."""
    tokenizer = make_tokenizer(train_bpe(count_words([pydoc_text()[:200_000]]), 1000), "bpe")
    return tokenizer, save_tokenizer(tokenizer, tmp_path_factory.mktemp("tok") / "tok")


@pytest.fixture(scope="module")
def run(own, tmp_path_factory):
    """A run trained with it: (output folder, its text file)."""
    tokenizer, folder = own
    out, text = tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("data") / "docs.txt"
    text.write_text(pydoc_text()[200_000:260_000])
    args = [*SMALL, "--data", text, "--tokenizer", folder, "--max-steps", "4"]
    main(["train", *map(str, args), "--save-every", "2", "--output-dir", str(out)])
    return out, text


@pytest.fixture
def mygpt(monkeypatch, capsys):
    """mygpt(*args): the command run in this process."""
    return lambda *args: run_in_process("mygpt", list(args), monkeypatch, capsys)


def greedy(model, text: str, n: int) -> tuple[list[int], str]:
    """The prompt's ids in the model's tokenizer, and the book's greedy completion of it."""
    tokenizer = model.tokenizer
    prompt = tokenizer.encode(text)
    ids = generate(model, torch.tensor([prompt]), n, eos_id=tokenizer.eot_token)[0].tolist()
    new = ids[len(prompt) :]
    return prompt, tokenizer.decode(
        new[: new.index(tokenizer.eot_token)] if tokenizer.eot_token in new else new
    )


def test_the_model_and_checkpoint_carry_the_tokenizer(own, run):
    tokenizer, _ = own
    out, _ = run
    model = load_model(out / "model.safetensors")
    assert model.cfg.vocab_size == tokenizer.n_vocab == 1000
    assert model.tokenizer.name == tokenizer.name
    assert load_model(out / "checkpoint.pt").tokenizer.name == tokenizer.name
    saved = read_checkpoint(out / "checkpoint.pt", "cpu").tokenizer
    assert json.loads(saved)["kind"] == "bpe"


def test_resume_keeps_it_when_its_folder_is_gone(own, run, tmp_path, mygpt):
    tokenizer, folder = own
    out, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    moved = tmp_path / "moved"
    shutil.move(folder, moved)
    try:
        done = mygpt("train", "--resume", copy / "checkpoint.pt", "--max-steps", "6")
    finally:
        shutil.move(moved, folder)
    assert done.returncode == 0, done.stderr
    assert load_model(copy / "model.safetensors").tokenizer.name == tokenizer.name


def test_another_tokenizer_is_refused_in_one_line(own, run, tmp_path, mygpt):
    tokenizer, _ = own
    out, text = run
    for flags, where in [
        (["--init-from", out / "model.safetensors", "--tokenizer", "gpt2"], "--init-from"),
        (["--resume", out / "checkpoint.pt", "--tokenizer", "char"], "--resume's checkpoint"),
    ]:
        done = mygpt("train", *flags, "--data", text, "--output-dir", tmp_path / "x")
        assert done.returncode == 2
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(f"error: {where}")
        assert f" was trained with the tokenizer {tokenizer.name}, not " in line
        assert line.endswith(": its token ids mean other text")


def test_eval_only_scores_with_it(own, run, mygpt):
    tokenizer, _ = own
    out, text = run
    model = load_model(out / "model.safetensors")
    ids = tokenizer.encode(text.read_text())
    expected = score_tokens(model, ids)
    done = mygpt("train", "--init-from", out / "model.safetensors", "--data", text, "--eval-only")
    assert done.returncode == 0, done.stderr
    assert f"Loss {expected.loss:.4f}" in done.stdout
    assert f"over {len(ids) - 1} tokens" in done.stdout


def test_generate_decodes_with_it(own, run, tmp_path, mygpt):
    tokenizer, _ = own
    out, _ = run
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "The return statement"}) + "\n")
    args = ["--input", prompts, "--output", tmp_path / "o.jsonl", "--temperature", "0"]
    done = mygpt("generate", out / "model.safetensors", *args, "--max-new-tokens", "12")
    assert done.returncode == 0, done.stderr
    line = json.loads((tmp_path / "o.jsonl").read_text())
    prompt, completion = greedy(load_model(out / "model.safetensors"), "The return statement", 12)
    assert line["completion"] == completion
    assert line["prompt_tokens"] == len(prompt)


def test_the_hugging_face_export_carries_it(own, run, tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizer, _ = own
    out, _ = run
    model = load_model(out / "model.safetensors")
    folder = export_hf(model, tmp_path / "hf")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    text = pydoc_text()[300_000:310_000] + " héllo 🙂<|endoftext|>"
    ids = tokenizer.encode(text, allowed_special="all")
    assert hf_tokenizer(text)["input_ids"] == ids
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    x = torch.tensor([ids[:64]])
    with torch.no_grad():
        assert torch.allclose(hf_model(x).logits, model(x), atol=1e-4)
    assert hf_model.config.eos_token_id == tokenizer.eot_token == 999


def test_characters(tmp_path, mygpt):
    done = mygpt(
        "train", *SMALL, "--tokenizer", "char", "--max-steps", "2", "--output-dir", tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "- vocab_size: 257" in done.stdout
    model = load_model(tmp_path / "model.safetensors")
    assert model.tokenizer.encode("Every é") == [69, 118, 101, 114, 121, 32, 195, 169]


def test_mygpt_serve_encodes_and_decodes_with_it(own, run):
    from fastapi.testclient import TestClient

    from mygpt.inference.engine import Engine
    from mygpt.inference.precision import for_inference
    from mygpt.serving.app import ServerConfig, create_app

    tokenizer, _ = own
    out, _ = run
    model = load_model(out / "model.safetensors")
    engine = Engine(for_inference(model, "float32"), model.tokenizer, max_batch=2)
    with TestClient(create_app(engine, ServerConfig(model_name="own"))) as client:
        body = {"model": "own", "prompt": "The return statement", "max_tokens": 10}
        reply = client.post("/v1/completions", json=body | {"temperature": 0}).json()
    prompt, completion = greedy(model, "The return statement", 10)
    assert reply["choices"][0]["text"] == completion
    assert reply["usage"]["prompt_tokens"] == len(prompt)


def test_another_pre_tokenizer_pattern(tmp_path, mygpt):
    from tokenizers import Tokenizer

    from mygpt.export.gguf_file import export_gguf
    from mygpt.tokenizer import load_tokenizer

    data = tmp_path / "d.txt"
    data.write_text(pydoc_text()[:50_000])
    words = r"\w+|[^\w\s]+|\s+"  # no leading space on words, unlike GPT-2's
    out = tmp_path / "tok"
    done = mygpt(
        "tokenizer",
        "train",
        "--data",
        data,
        "--vocab-size",
        "600",
        "--pattern",
        words,
        "--out",
        out,
    )
    assert done.returncode == 0, done.stderr
    tokenizer = load_tokenizer(out)
    text = pydoc_text()[60_000:70_000]
    ids = tokenizer.encode_ordinary(text)
    assert Tokenizer.from_file(str(out / "tokenizer.json")).encode(text).ids == ids
    assert all(
        not tokenizer.decode([i]).startswith(" ") or tokenizer.decode([i]).isspace() for i in ids
    )
    from mygpt import GPTConfig, GPTModel
    from mygpt.errors import UserError

    model = GPTModel(GPTConfig(tokenizer.n_vocab, 32, 32, 2, 1))
    model.tokenizer = tokenizer
    with pytest.raises(UserError, match="this tokenizer's pattern is not GPT-2's"):
        export_gguf(model, tmp_path / "m.gguf", "f32")
    assert not list(tmp_path.glob("m.gguf*")) and not list(tmp_path.glob(".m.gguf*"))
    bad = mygpt("tokenizer", "train", "--data", data, "--pattern", "(", "--out", tmp_path / "x")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --pattern '(': not a regular")

"""The faults of issue 31, one test per row: found by using MyGPT as a user would (two runs on
one corpus, Ctrl-C and SIGTERM at the wrong moment, a full disk, bad files and numbers). Each
asserts what the user gets now: one line and an exit code, or a safe stop; no partial file."""

import gzip
import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, pydoc_text, run_in_process
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import mygpt.corpus
from mygpt import GPTConfig, GPTModel, Sampling, load_corpus, load_model, save_model
from mygpt.chat import ChatSettings, chat
from mygpt.export import export_hf

V1, V2, EXPORT = ROOT / "MyGPT_v1_local-train.py", ROOT / "MyGPT_v2_pretrained.py", "mygpt.export"
SMALL = GPTConfig(context_length=32, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.0)
TINY = ["--emb-dim", "32", "--n-layers", "1", "--n-heads", "2", "--context-length", "32",
        "--batch-size", "2", "--eval-freq", "5", "--eval-iter", "1", "--sample-tokens", "3"]  # fmt: skip


@pytest.fixture
def run(monkeypatch, capsys):
    """run(script, *args): the script (a path or python -m's module) in this process."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    return lambda script, *args: run_in_process(script, args, monkeypatch, capsys)


def one_line_error(done, code: int = 2) -> str:
    """The message of a run that failed as a user error must: one line, its exit code."""
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("error: "), done.stderr
    return last.removeprefix("error: ")


def small_file(path: Path, cfg: GPTConfig = SMALL, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_model(GPTModel(cfg).eval(), path)


def leftovers(folder: Path) -> list[str]:
    """Temporary files and folders under `folder` (what a write in progress uses)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if "tmp" in p.name)


def text_file(path: Path, n_chars: int = 40_000) -> Path:
    path.write_text(pydoc_text()[:n_chars])
    return path


def child(args, **kwargs) -> subprocess.Popen:
    """A script or module in a child process of its own group, its output piped."""
    command = [sys.executable, *(["-m", args[0]] if isinstance(args[0], str) else [args[0]])]
    return subprocess.Popen([*command, *map(str, args[1:])], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)  # fmt: skip


def file_size_limit(n_bytes: int):
    """Popen preexec_fn: no file of the child may grow past `n_bytes` (EFBIG, as a full disk
    fails a write: the same OSError path); SIGXFSZ ignored so that the write fails instead."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))

    return limit


# 1. Two runs on one corpus


def test_two_runs_tokenizing_one_corpus_each_write_their_own_file(tmp_path, tokenizer, monkeypatch):
    """While run A writes its token file, run B makes the same one whole; then A finishes.
    Before, both wrote NAME.mygpt-tokens.bin.tmp: B truncated A's, A lost its rename."""
    data = text_file(tmp_path / "corpus.txt")
    tokenize = mygpt.corpus._tokenize_to_file
    during = []

    def a_then_b(files, total, tok, token_file, *args):
        n = tokenize(files, total, tok, token_file, *args)
        if not during:  # run B, start to end, while A's file is written but not yet in place
            during.append(token_file)
            during.append(load_corpus(data, tokenizer, memmap=True, log=lambda line: None))
        return n

    monkeypatch.setattr(mygpt.corpus, "_tokenize_to_file", a_then_b)
    lines = []
    a = load_corpus(data, tokenizer, memmap=True, log=lines.append)
    ids = tokenizer.encode(data.read_text())
    for corpus in (a, during[1]):
        assert np.concatenate([corpus.train, corpus.val]).tolist() == ids
    assert lines[0].startswith("Tokenized ") and lines[0].endswith(f": {a.token_file}")
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    again = []
    load_corpus(data, tokenizer, memmap=True, log=again.append)
    assert again == [f"Using the tokens cached in {a.token_file} ({len(ids):,} tokens)"]


# 2. Ctrl-C or SIGTERM just after "Training completed"

BIG = ["--emb-dim", "256", "--n-layers", "2", "--n-heads", "4", "--context-length", "32",
       "--batch-size", "2", "--eval-freq", "50", "--eval-iter", "1", "--sample-tokens", "1",
       "--max-steps", "2"]  # fmt: skip  # 100 MB of weights: saving them takes a while


def stopped_at(line: str, args, sig: int):
    """Run v1 with `args`, send `sig` when it prints `line`; its (exit code, stdout, stderr)."""
    proc = child([V1, *args], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out = []
    for text in proc.stdout:
        out.append(text)
        if text.startswith(line):
            proc.send_signal(sig)
            break
    rest, err = proc.communicate(timeout=300)
    return proc.returncode, "".join(out) + rest, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_training_completed_still_saves_the_model(tmp_path, sig):
    out = tmp_path / "run"
    code, stdout, stderr = stopped_at("Training completed", [*BIG, "--output-dir", out], sig)
    assert code == 0, stderr
    assert "Saving the trained model first (Ctrl-C again: a checkpoint instead)..." in stderr
    assert sorted(p.name for p in out.iterdir()) == ["loss-plot.png", "model.safetensors"]
    assert f"Model weights saved to: {out / 'model.safetensors'}" in stdout
    load_model(out / "model.safetensors")


def test_sigterm_after_a_lora_run_completed_keeps_adapter_and_merged_model(tmp_path):
    base = small_file(tmp_path / "base.safetensors", GPTConfig(context_length=32, emb_dim=256,
                      n_heads=4, n_layers=2, drop_rate=0.0))  # fmt: skip
    out = tmp_path / "run"
    args = [*BIG[8:], "--init-from", base, "--lora-rank", "4", "--output-dir", out]
    code, stdout, stderr = stopped_at("Training completed", args, signal.SIGTERM)
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter.safetensors", "loss-plot.png", "model.safetensors"]  # fmt: skip


# 3. A full disk


def test_a_full_disk_at_the_final_save_says_what_was_lost(tmp_path):
    """A file-size limit as the full disk: 200 kB, less than a checkpoint or the weights."""
    out = tmp_path / "run"
    proc = child([V1, *TINY, "--data", text_file(tmp_path / "t.txt"), "--max-steps", "4",
                  "--save-every", "2", "--output-dir", out],
                 preexec_fn=file_size_limit(200_000))  # fmt: skip
    stdout, stderr = proc.communicate(timeout=300)
    checkpoint, weights = out / "checkpoint.pt", out / "model.safetensors"
    assert proc.returncode == 1, stderr
    assert stderr.splitlines()[0] == (
        f"warning: could not write {checkpoint} (File too large): a periodic checkpoint not "
        "saved; this run wrote no checkpoint (--save-every N writes them); training goes on"
    )
    assert stderr.splitlines()[-1] == (
        f"error: could not write {weights} (File too large): the trained weights not saved; "
        "this run wrote no checkpoint (--save-every N writes them)"
    )
    assert "Traceback" not in stderr and "Training completed" in stdout
    assert not out.exists()  # nothing partial was left in it, and it was made for the run


def test_a_full_disk_in_export_and_in_the_hub_cache_is_one_line(tmp_path):
    source = small_file(tmp_path / "m.safetensors")
    for to, out in (("hf", tmp_path / "hf"), ("gguf", tmp_path / "m.gguf")):
        proc = child([EXPORT, source, "--to", to, out], preexec_fn=file_size_limit(100_000))
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, stderr
        assert stderr.splitlines()[-1] == (
            f"error: {out}: could not be written (File too large); nothing written"
        )
        assert not out.exists() and leftovers(tmp_path) == []
    # A hub folder whose mygpt.safetensors cannot be written beside it still loads.
    hub = export_hf(load_model(source), tmp_path / "hub")
    proc = child([EXPORT, hub, "--to", "gguf", tmp_path / "h.gguf", "--outtype", "q8_0"],
                 preexec_fn=file_size_limit(6_000_000))  # fmt: skip
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"could not save {hub / 'mygpt.safetensors'} (File too large)" in stderr
    assert "Traceback" not in stderr and leftovers(tmp_path) == []


# 4. A hub folder's config with bad values


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_embd": -64}, "n_embd is -64, not a positive integer"),
        ({"n_head": 0}, "n_head is 0, not a positive integer"),
        ({"n_embd": "64"}, 'n_embd is "64", not a positive integer'),
        ({"n_embd": None}, "n_embd is null, not a positive integer"),
        ({"n_embd": [64]}, "n_embd is [64], not a positive integer"),
        ({"n_embd": 64.0}, "n_embd is 64.0, not a positive integer"),
        ({"n_layer": True}, "n_layer is true, not a positive integer"),
        ({"n_head": 5}, "n_embd 32 is not divisible by n_head 5"),
        ({"n_layer": "drop"}, "has no n_layer"),
        ([1, 2], "holds list, not a JSON object"),
        ("{not json", "not valid JSON (Expecting property name enclosed in double quotes"),
    ],
)
def test_a_hub_config_with_bad_values_is_one_line(run, tmp_path, change, message):
    hub = export_hf(GPTModel(SMALL), tmp_path / "hub")
    config = json.loads((hub / "config.json").read_text())
    if isinstance(change, dict):
        config |= change
        config = {k: v for k, v in config.items() if v != "drop"}
    text = change if isinstance(change, str) else json.dumps(config if isinstance(change, dict)
                                                            else change)  # fmt: skip
    (hub / "config.json").write_text(text)
    for script, *args in ((EXPORT, hub, "--to", "gguf", tmp_path / "o.gguf"),
                          (V2, "--checkpoint-dir", hub)):  # fmt: skip
        assert one_line_error(run(script, *args)).startswith(f"{hub / 'config.json'}: {message}")


def test_an_openai_hparams_json_with_bad_values_is_one_line(run, tmp_path):
    folder = tmp_path / "tf"
    folder.mkdir()
    for name in ("model.ckpt.index", "model.ckpt.data-00000-of-00001"):
        (folder / name).write_bytes(b"")
    shape = {"n_vocab": 50257, "n_ctx": 32, "n_embd": 32, "n_head": 2, "n_layer": 1}
    for hparams, message in (({**shape, "n_ctx": 0}, "n_ctx is 0, not a positive integer"),
                             ({**shape, "n_vocab": 1.5}, "n_vocab is 1.5, not a positive integer"),
                             (["x"], "holds list, not a JSON object")):  # fmt: skip
        (folder / "hparams.json").write_text(json.dumps(hparams))
        done = run(V1, "--eval-only", "--init-from", folder, "--data", text_file(tmp_path / "t.txt"))
        assert one_line_error(done) == f"{folder / 'hparams.json'}: {message}"


# 5. model.safetensors whose metadata contradicts its tensors


def rewritten(source: Path, path: Path, change_config=None, change_tensors=None) -> Path:
    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(source)
    config = json.loads(metadata["config"])
    metadata["config"] = json.dumps(change_config(config) if change_config else config)
    save_file(change_tensors(tensors) if change_tensors else tensors, path, metadata)
    return path


def test_weights_whose_metadata_contradicts_their_tensors_are_one_line(run, tmp_path):
    source = small_file(tmp_path / "m.safetensors")
    data = text_file(tmp_path / "t.txt")
    bad = "damaged or not weights saved by MyGPT"
    cases = [
        ({"change_config": lambda c: c | {"emb_dim": 128}},
         "its tensor tok_emb.weight is (50257, 32); its config makes it (50257, 128)"),
        ({"change_tensors": lambda t: {k: v for k, v in t.items() if k != "final_norm.shift"}},
         "it has no tensor final_norm.shift"),
        ({"change_tensors": lambda t: t | {"final_norm.scale": t["final_norm.scale"].long()}},
         "its tensor final_norm.scale is not floating point"),
        ({"change_config": lambda c: c | {"n_layers": 100_000}},
         "its config says 100000 layers, its tensors have 1"),
        ({"change_config": lambda c: c | {"n_heads": "2"}},
         "the model config's n_heads is '2', not int"),
    ]  # fmt: skip
    for i, (change, message) in enumerate(cases):
        path = rewritten(source, tmp_path / f"bad{i}.safetensors", **change)
        done = run(V1, "--eval-only", "--init-from", path, "--data", data)
        assert one_line_error(done) == f"{path}: {bad} ({message})"


def test_float16_weights_score_as_the_exporter_reads_them(run, tmp_path):
    source = small_file(tmp_path / "m.safetensors")
    half = rewritten(source, tmp_path / "half.safetensors",
                     change_tensors=lambda t: {k: v.half() for k, v in t.items()})  # fmt: skip
    data = text_file(tmp_path / "t.txt")
    scores = [run(V1, "--eval-only", "--init-from", p, "--data", data) for p in (source, half)]
    assert [s.returncode for s in scores] == [0, 0], scores[1].stderr
    losses = [float(s.stdout.split()[1].strip(",")) for s in scores]  # "Loss 10.83, ..."
    assert losses[1] == pytest.approx(losses[0], abs=0.01)


# 6. Numbers at the edges


def test_a_seed_too_large_is_one_line_and_leaves_no_folder(run, tmp_path):
    out = tmp_path / "run"
    done = run(V1, *TINY, "--seed", "99999999999999999999999", "--output-dir", out)
    assert one_line_error(done) == (
        "--seed must be from 0 to 2**63 - 1, got 99999999999999999999999"
    )
    assert one_line_error(run(V2, "--seed", "-1")) == "--seed must be from 0 to 2**63 - 1, got -1"
    assert not out.exists()


def test_the_chat_survives_numbers_at_the_edges(tokenizer, capsys):
    torch.manual_seed(0)
    model = GPTModel(SMALL).eval()
    lines = [
        "/set seed 99999999999999999999999",
        "/set repetition_penalty inf",
        "/set temperature inf",
        "/set max_new_tokens 4",
        "/set temperature 1e-300",
        "Every effort",
        "/set repetition_penalty 1e-300",
        "Every effort",
        "/set temperature 0",
        "/set repetition_penalty 1",
        "Every effort",
    ]
    chat(model, tokenizer, ChatSettings(Sampling(temperature=0.7), seed=1),
         stdin=io.StringIO("\n".join(lines) + "\n"))  # fmt: skip
    out = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("> ")]
    assert out[1:4] == [
        "error: seed must be from 0 to 2**63 - 1, got 99999999999999999999999",
        "error: repetition_penalty must be > 0 and finite, got inf",
        "error: temperature must be >= 0 and finite, got inf",
    ]
    completions = [line for line in out[1:] if line.startswith("MyGPT: ")]
    assert len(completions) == 3
    assert completions[0] == completions[2]  # a temperature near 0 is greedy


# 7. SIGTERM during export or tokenizing


def terminated_when(proc: subprocess.Popen, folder: Path) -> tuple[int, str]:
    """SIGTERM `proc` as soon as a temporary file appears under `folder`."""
    deadline = time.monotonic() + 120
    while not leftovers(folder) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert leftovers(folder), "nothing was being written"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def test_sigterm_during_export_leaves_nothing(tmp_path):
    source = small_file(tmp_path / "m.safetensors", GPTConfig(context_length=256, emb_dim=512,
                        n_heads=8, n_layers=4))  # fmt: skip
    for to, out in (("gguf", tmp_path / "out" / "m.gguf"), ("hf", tmp_path / "out" / "hf")):
        out.parent.mkdir(exist_ok=True)
        proc = child([EXPORT, source, "--to", to, out, *(["--outtype", "f32"] * (to == "gguf"))])
        code, stderr = terminated_when(proc, out.parent)
        assert (code, stderr.splitlines()[-1]) == (143, "Terminated.")
        assert "Traceback" not in stderr and list(out.parent.iterdir()) == []


def test_sigterm_during_tokenizing_leaves_nothing(tmp_path):
    data = tmp_path / "data" / "big.txt"
    data.parent.mkdir()
    data.write_text(pydoc_text() * 40)  # 18 MB: tokenized into a token file beside it
    proc = child([V1, *TINY, "--data", data, "--output-dir", tmp_path / "run"])
    code, stderr = terminated_when(proc, data.parent)
    assert (code, stderr.splitlines()[-1]) == (143, "Terminated.")
    assert sorted(p.name for p in data.parent.iterdir()) == ["big.txt"]
    assert not (tmp_path / "run").exists()


# 8. Instruction records that are not objects


def test_instruction_records_that_are_not_objects_are_named(run, tmp_path):
    record = {"instruction": "Say hi.", "input": "", "output": "Hi."}
    cases = [
        ("a.json", json.dumps([record, 5]), "record 2: 5 is not an object"),
        ("b.jsonl", f"{json.dumps(record)}\n[1, 2]\n", "line 2: [1, 2] is not an object"),
        ("c.jsonl", f"{json.dumps(record)}\n\nnull\n", "line 3: null is not an object"),
    ]
    for name, text, message in cases:
        (path := tmp_path / name).write_text(text)
        done = run(V1, "--data", path, "--init-from", small_file(tmp_path / "m"), "--output-dir",
                   tmp_path / "run")  # fmt: skip
        assert one_line_error(done) == f"{path}: {message}"

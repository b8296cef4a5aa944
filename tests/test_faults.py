"""The faults of issue 31, one test per row: found by using MyGPT as a user would (two runs on
one corpus, Ctrl-C and SIGTERM at the wrong moment, a full disk, bad files and numbers). Each
asserts what the user gets now: one line and an exit code, or a safe stop; no partial file."""

import gzip
import io
import json
import os
import random
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import ROOT, pydoc_text, run_in_process
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import mygpt.data.corpus
from mygpt import GPTConfig, GPTModel, Sampling, load_corpus, load_model, save_model
from mygpt.export import export_hf
from mygpt.inference.chat import ChatSettings, chat

V1, V2, EXPORT = ROOT / "MyGPT_v1_local-train.py", ROOT / "MyGPT_v2_pretrained.py", "mygpt.export"
SMALL = GPTConfig(context_length=32, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.0)
TINY = shlex.split(
    "--emb-dim 32 --n-layers 1 --n-heads 2 --context-length 32 --batch-size 2 "
    "--eval-freq 5 --eval-iter 1 --sample-tokens 3"
)


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
    return subprocess.Popen(
        [*command, *map(str, args[1:])],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


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
    tokenize = mygpt.data.corpus._tokenize_to_file
    during = []

    def a_then_b(files, total, tok, token_file, *args):
        n = tokenize(files, total, tok, token_file, *args)
        if not during:  # run B, start to end, while A's file is written but not yet in place
            during.append(token_file)
            during.append(load_corpus(data, tokenizer, memmap=True, log=lambda line: None))
        return n

    monkeypatch.setattr(mygpt.data.corpus, "_tokenize_to_file", a_then_b)
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

BIG = shlex.split(
    "--emb-dim 256 --n-layers 2 --n-heads 4 --context-length 32 --batch-size 2 "
    "--eval-freq 50 --eval-iter 1 --sample-tokens 1 --max-steps 2"
)  # 100 MB of weights: saving them takes a while


def stopped_at(line: str, args, sig: int, delay: float = 0.0):
    """Run v1 with `args`, send `sig` `delay` s after it prints a line starting with `line`
    (if it does); its (exit code, stdout, stderr)."""
    proc = child([V1, *args], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out = []
    for text in proc.stdout:
        out.append(text)
        if text.startswith(line):
            time.sleep(delay)
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
    base = small_file(
        tmp_path / "base.safetensors",
        GPTConfig(context_length=32, emb_dim=256, n_heads=4, n_layers=2, drop_rate=0.0),
    )
    out = tmp_path / "run"
    args = [*BIG[8:], "--init-from", base, "--lora-rank", "4", "--output-dir", out]
    code, stdout, stderr = stopped_at("Training completed", args, signal.SIGTERM)
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter.safetensors",
        "loss-plot.png",
        "model.safetensors",
    ]


# 3. A full disk


def test_a_full_disk_at_the_final_save_says_what_was_lost(tmp_path):
    """A file-size limit as the full disk: 200 kB, less than a checkpoint or the weights."""
    out = tmp_path / "run"
    proc = child(
        [
            V1,
            *TINY,
            "--data",
            text_file(tmp_path / "t.txt"),
            "--max-steps",
            "4",
            "--save-every",
            "2",
            "--output-dir",
            out,
        ],
        preexec_fn=file_size_limit(200_000),
    )
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
    proc = child(
        [EXPORT, hub, "--to", "gguf", tmp_path / "h.gguf", "--outtype", "q8_0"],
        preexec_fn=file_size_limit(6_000_000),
    )
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
    text = (
        change
        if isinstance(change, str)
        else json.dumps(config if isinstance(change, dict) else change)
    )
    (hub / "config.json").write_text(text)
    for script, *args in (
        (EXPORT, hub, "--to", "gguf", tmp_path / "o.gguf"),
        (V2, "--checkpoint-dir", hub),
    ):
        assert one_line_error(run(script, *args)).startswith(f"{hub / 'config.json'}: {message}")


def test_an_openai_hparams_json_with_bad_values_is_one_line(run, tmp_path):
    folder = tmp_path / "tf"
    folder.mkdir()
    for name in ("model.ckpt.index", "model.ckpt.data-00000-of-00001"):
        (folder / name).write_bytes(b"")
    shape = {"n_vocab": 50257, "n_ctx": 32, "n_embd": 32, "n_head": 2, "n_layer": 1}
    for hparams, message in (
        ({**shape, "n_ctx": 0}, "n_ctx is 0, not a positive integer"),
        ({**shape, "n_vocab": 1.5}, "n_vocab is 1.5, not a positive integer"),
        (["x"], "holds list, not a JSON object"),
    ):
        (folder / "hparams.json").write_text(json.dumps(hparams))
        data = text_file(tmp_path / "t.txt")
        done = run(V1, "--eval-only", "--init-from", folder, "--data", data)
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
        (
            {"change_config": lambda c: c | {"emb_dim": 128}},
            "its tensor tok_emb.weight is (50257, 32); its config makes it (50257, 128)",
        ),
        (
            {"change_tensors": lambda t: {k: v for k, v in t.items() if k != "final_norm.shift"}},
            "it has no tensor final_norm.shift",
        ),
        (
            {"change_tensors": lambda t: t | {"final_norm.scale": t["final_norm.scale"].long()}},
            "its tensor final_norm.scale is not floating point",
        ),
        (
            {"change_config": lambda c: c | {"n_layers": 100_000}},
            "its config says 100000 layers, its tensors have 1",
        ),
        (
            {"change_config": lambda c: c | {"n_heads": "2"}},
            "the model config's n_heads is '2', not int",
        ),
    ]
    for i, (change, message) in enumerate(cases):
        path = rewritten(source, tmp_path / f"bad{i}.safetensors", **change)
        done = run(V1, "--eval-only", "--init-from", path, "--data", data)
        assert one_line_error(done) == f"{path}: {bad} ({message})"


def test_float16_weights_score_as_the_exporter_reads_them(run, tmp_path):
    source = small_file(tmp_path / "m.safetensors")
    half = rewritten(
        source,
        tmp_path / "half.safetensors",
        change_tensors=lambda t: {k: v.half() for k, v in t.items()},
    )
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
    chat(
        model,
        tokenizer,
        ChatSettings(Sampling(temperature=0.7), seed=1),
        stdin=io.StringIO("\n".join(lines) + "\n"),
    )
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
    source = small_file(
        tmp_path / "m.safetensors",
        GPTConfig(context_length=256, emb_dim=512, n_heads=8, n_layers=4),
    )
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
        done = run(
            V1,
            "--data",
            path,
            "--init-from",
            small_file(tmp_path / "m"),
            "--output-dir",
            tmp_path / "run",
        )
        assert one_line_error(done) == f"{path}: {message}"


# 9. An empty --start-context


def test_an_empty_start_context_is_one_line_before_anything_runs(run, tmp_path):
    out = tmp_path / "run"
    done = run(V1, *TINY, "--start-context", "", "--output-dir", out)
    assert one_line_error(done) == "--start-context must not be empty: samples continue it"
    assert not out.exists()


# 10. Corrupt compressed data


def test_corrupt_compressed_data_is_one_line(run, tmp_path):
    texts = [pydoc_text()[i : i + 2000] for i in range(0, 200_000, 2000)]
    packed = bytearray(
        gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in texts).encode(), mtime=0)
    )
    packed[len(packed) // 2] ^= 0x10
    (gz := tmp_path / "bad.jsonl.gz").write_bytes(packed)
    pq.write_table(
        pa.table({"text": texts}), parquet := tmp_path / "bad.parquet", compression="snappy"
    )
    pages = bytearray(parquet.read_bytes())
    pages[2000:4000] = bytes(b ^ 0xFF for b in pages[2000:4000])  # inside the first data page
    parquet.write_bytes(pages)
    (deep := tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    for path, message in (
        (gz, "cannot be read (CRC check failed"),
        (parquet, "damaged (Corrupt snappy compressed data.)"),
        (deep, "not JSON (nested too deeply)"),
    ):
        done = run(V1, *TINY, "--data", path, "--output-dir", tmp_path / "run")
        assert one_line_error(done).startswith(f"{path}: {message}")
        assert not (tmp_path / "run").exists()


# 11. An export whose OUT is or holds its SOURCE


def test_an_export_into_its_own_source_is_refused_even_with_force(run, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    source = small_file(folder / "model.safetensors")
    (folder / "checkpoint.pt").write_bytes(b"the run's checkpoint")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for out, to in ((folder, "hf"), (source, "gguf"), (tmp_path, "hf")):
        done = run(EXPORT, source, "--to", to, out, "--force")
        assert one_line_error(done) == (
            f"{out}: is or holds SOURCE {source}; write the export elsewhere"
        )
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# 12. Byte-order marks and line numbers

RECORD = {"instruction": "Name a colour.", "input": "", "output": "Blue."}


def test_a_byte_order_mark_is_read_and_a_bad_line_is_numbered(run, tmp_path):
    base = small_file(tmp_path / "base.safetensors")
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([RECORD] * 20), encoding="utf-8-sig")
    done = run(
        V1,
        *TINY,
        "--data",
        alpaca,
        "--init-from",
        base,
        "--max-steps",
        "1",
        "--output-dir",
        tmp_path / "run",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "model.safetensors").is_file()
    lines = [json.dumps(RECORD)] * 40 + ['{"instruction": "x\x01y", "input": "", "output": ""}']
    for encoding in ("utf-8", "utf-8-sig"):
        (jsonl := tmp_path / f"records-{encoding}.jsonl").write_text(
            "\n".join(lines) + "\n", encoding=encoding
        )
        done = run(V1, *TINY, "--data", jsonl, "--init-from", base, "--output-dir", tmp_path / "r")
        assert one_line_error(done) == (
            f"{jsonl}: line 41: not JSON (Invalid control character at column 19)"
        )


# 13. Non-finite weights


def test_weights_that_are_not_finite_are_refused_everywhere(run, tmp_path):
    def nan(tensors):
        return tensors | {"final_norm.scale": torch.full_like(tensors["final_norm.scale"], np.nan)}

    path = rewritten(
        small_file(tmp_path / "m.safetensors"), tmp_path / "nan.safetensors", change_tensors=nan
    )
    data = text_file(tmp_path / "t.txt")
    message = f"{path}: its weights are not finite (final_norm.scale holds nan or infinite values)"
    for script, *args in (
        (V1, "--eval-only", "--init-from", path, "--data", data),
        (
            V1,
            *TINY,
            "--init-from",
            path,
            "--data",
            data,
            "--allow-nonfinite",
            "--output-dir",
            tmp_path / "run",
        ),
        (EXPORT, path, "--to", "gguf", tmp_path / "nan.gguf"),
        (EXPORT, path, "--to", "hf", tmp_path / "hf"),
    ):
        assert one_line_error(run(script, *args)) == message
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.safetensors",
        "nan.safetensors",
        "t.txt",
    ]


# 14. Flags that would do nothing


def test_flags_that_would_do_nothing_are_refused(run, tmp_path):
    data = text_file(tmp_path / "t.txt")
    base = small_file(tmp_path / "m.safetensors")
    score = ["--eval-only", "--init-from", base, "--data", data]
    for flag, value in (
        ("--lora-rank", "4"),
        ("--max-steps", "3"),
        ("--lr", "1e-3"),
        ("--output-dir", tmp_path / "run"),
    ):
        assert one_line_error(run(V1, *score, flag, value)) == (
            f"--eval-only scores a model and trains nothing: {flag} does nothing"
        )
    for flag in (["--mask-prompt"], ["--max-length", "64"]):
        done = run(V1, *TINY, "--data", data, *flag, "--output-dir", tmp_path / "run")
        assert one_line_error(done) == (
            f"{flag[0]} is for instruction data; {data} is text to train on"
        )
    assert not (tmp_path / "run").exists()
    first = run(
        V1,
        *TINY,
        "--data",
        data,
        "--max-steps",
        "2",
        "--save-every",
        "2",
        "--output-dir",
        tmp_path / "run",
    )
    assert first.returncode == 0, first.stderr[-2000:]
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert one_line_error(run(V1, "--resume", checkpoint, "--init-from", base)) == (
        "--resume continues the checkpoint's weights: --init-from does nothing"
    )
    other = text_file(tmp_path / "other.txt", 20_000)
    assert one_line_error(run(V1, "--resume", checkpoint, "--data", other)) == (
        f"--resume continues on the data it was trained on, {data}, where it stopped; "
        f"--data {other} is other data (start a run with --init-from)"
    )
    scored = run(V1, "--eval-only", "--resume", checkpoint, "--data", other)
    assert scored.returncode == 0, scored.stderr[-2000:]  # scoring it on other data is fine


# 15. Smaller faults


def test_saved_files_have_the_usual_mode(run, tmp_path):
    usual = 0o666 & ~umask()
    data = text_file(tmp_path / "t.txt")
    base = small_file(tmp_path / "base.safetensors")
    out = tmp_path / "run"
    done = run(
        V1,
        *TINY,
        "--data",
        data,
        "--init-from",
        base,
        *shlex.split("--lora-rank 2 --max-steps 2 --save-every 2 --output-dir"),
        out,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    hub = export_hf(load_model(out / "model.safetensors"), tmp_path / "hub")
    saved = {
        str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777
        for folder in (out, hub)
        for p in folder.iterdir()
    }
    assert {
        "run/adapter.safetensors",
        "run/checkpoint.pt",
        "run/model.safetensors",
        "hub/model.safetensors",
    } <= saved.keys()
    assert saved == dict.fromkeys(saved, usual)


def umask() -> int:
    mask = os.umask(0o022)  # read by setting it; put straight back
    os.umask(mask)
    return mask


def test_an_adapter_given_as_a_model_is_named(run, tmp_path):
    base = small_file(tmp_path / "base.safetensors")
    out = tmp_path / "run"
    done = run(
        V1,
        *TINY,
        "--data",
        text_file(tmp_path / "t.txt"),
        "--init-from",
        base,
        "--lora-rank",
        "2",
        "--max-steps",
        "1",
        "--output-dir",
        out,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    adapter = out / "adapter.safetensors"
    assert one_line_error(run(EXPORT, adapter, "--to", "gguf", tmp_path / "a.gguf")) == (
        f"{adapter}: a LoRA adapter, not a model: give its base weights, and this file as "
        "--lora-adapter"
    )


def test_a_dictionary_encoded_parquet_column_trains(run, tmp_path, tokenizer):
    texts = [pydoc_text()[i : i + 1000] for i in range(0, 40_000, 1000)]
    table = pa.table({"text": pa.array(texts * 2).dictionary_encode()})
    pq.write_table(table, path := tmp_path / "dict.parquet", use_dictionary=False)
    assert pa.types.is_dictionary(pq.read_schema(path).field("text").type)
    done = run(V1, *TINY, "--data", path, "--max-steps", "1", "--output-dir", tmp_path / "run")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "model.safetensors").is_file()


# 3 of "What users must get": runs killed at random points


def whole_and_finite(folder: Path, ids: list[int]) -> None:
    """Each file under `folder` a reader opens is whole (read by its format's library) and
    finite; temporary files (a SIGKILL's leftovers) have names no reader opens."""
    for path in folder.rglob("*"):
        if "tmp" in path.name or path.is_dir() or path.suffix in (".txt", ".lock"):
            continue
        if path.name == "checkpoint.pt":
            tensors = [t for t in torch.load(path, weights_only=True)["model"].values()]
        elif path.suffix == ".safetensors":
            tensors = list(load_file(path).values())
        elif path.suffix == ".gguf":
            tensors = [torch.from_numpy(t.data.copy()) for t in gguf.GGUFReader(path).tensors]
        elif path.name.endswith(".mygpt-tokens.bin"):
            assert np.fromfile(path, np.uint16).tolist() == ids, path
            continue
        elif path.suffix == ".Modelfile":  # Ollama's, beside a GGUF file
            assert path.read_text().startswith("FROM "), path
            continue
        elif path.suffix == ".json":
            json.loads(path.read_text())
            continue
        elif path.suffix == ".png":
            assert path.read_bytes().endswith(b"IEND\xaeB`\x82"), path
            continue
        else:
            raise AssertionError(f"an unexpected file: {path}")
        assert tensors and all(t.isfinite().all() for t in tensors), path


def test_runs_killed_at_random_points_resume_or_start_clean(tmp_path, tokenizer):
    """A seeded, bounded loop of v1 runs (tokenizing into a token file, training with
    checkpoints, saving) and exports, each sent SIGINT, SIGTERM or SIGKILL at a random point.
    After each: every file is whole and finite, INT and TERM leave no temporary file, and the
    next run resumes from checkpoint.pt or starts clean; at the end one runs to completion."""
    rng = random.Random(31)
    data = tmp_path / "data" / "corpus.txt"
    data.parent.mkdir()
    data.write_text(pydoc_text() * 4)  # 1.9 MB: a second or two to tokenize
    ids = tokenizer.encode(data.read_text())
    fresh = [
        *TINY[:-4],
        "--eval-freq",
        "10",
        "--data",
        data,
        "--memmap",
        "--max-steps",
        "60",
        "--save-every",
        "10",
    ]
    # Where: tokenizing (fresh) or loading (resumed), training, saving; each signal at least once.
    phases = [None, "Ep ", "Training completed", None, "Ep "]
    signals = rng.sample([signal.SIGINT, signal.SIGTERM, signal.SIGKILL] * 2, len(phases))
    out, finished, code = tmp_path / "run0", [], None
    for i, (phase, sig) in enumerate(zip(phases, signals, strict=True)):
        if code == 0:  # the last run finished: the next is a new one, and tokenizes again
            finished.append(out / "model.safetensors")
            out = tmp_path / f"run{i}"
            for cache in data.parent.glob("*.mygpt-tokens.*"):
                cache.unlink()
        checkpoint = out / "checkpoint.pt"
        resuming = checkpoint.exists()
        args = ["--resume", checkpoint] if resuming else [*fresh, "--output-dir", out]
        phase = phase or ("Resuming from" if resuming else "Loaded training data")
        before, delay = leftovers(tmp_path), rng.uniform(0, 0.6)
        code, stdout, stderr = stopped_at(phase, args, sig, delay)
        assert "Traceback" not in stderr, stderr
        assert code in (0, -signal.SIGKILL if sig == signal.SIGKILL else 128 + sig), stderr
        assert ("Resuming from" in stdout) == resuming or code == -signal.SIGKILL
        whole_and_finite(tmp_path, ids)
        if sig == signal.SIGKILL:
            continue
        assert leftovers(tmp_path) == before, stderr
        if code != 0 and (resuming or "Starting Training" in stdout):  # a safe stop
            assert stderr.splitlines()[-1] == f"Continue with: --resume {checkpoint}", stderr
            assert checkpoint.is_file()
    if code != 0:
        args = (
            ["--resume", out / "checkpoint.pt"]
            if (out / "checkpoint.pt").exists()
            else [*fresh, "--output-dir", out]
        )
        done = subprocess.run(
            [sys.executable, V1, *map(str, args)], capture_output=True, text=True, cwd=ROOT
        )
        assert done.returncode == 0, done.stderr[-2000:]
    finished.append(out / "model.safetensors")
    whole_and_finite(tmp_path, ids)

    gguf_file = tmp_path / "export" / "m.gguf"
    gguf_file.parent.mkdir()
    for source in finished[-2:]:
        sig = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
        before = leftovers(tmp_path)
        proc = child(
            [EXPORT, source, "--to", "gguf", gguf_file, "--outtype", "f32", "--force"],
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        time.sleep(rng.uniform(2, 6))
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
        assert "Traceback" not in stderr, stderr
        whole_and_finite(tmp_path, ids)
        if sig != signal.SIGKILL:
            assert leftovers(tmp_path) == before, stderr

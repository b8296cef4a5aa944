"""What users did that went wrong: divergence, endless inputs, two runs in one folder, folder
flags under a file, read-only data. Each: the message, the exit code and the files left."""

import errno
import io
import os
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, run_in_process
from safetensors.torch import load_file

import mygpt.data.corpus
from mygpt import GPTConfig, GPTModel, TrainSettings, load_corpus, save_model
from mygpt.data.windows import TokenWindows
from mygpt.errors import NonFiniteError
from mygpt.inference.chat import terminal_lines
from mygpt.training.outputs import LOCK_FILE
from mygpt.training.trainer import Trainer

V1, V2 = ROOT / "MyGPT_v1_local-train.py", ROOT / "MyGPT_v2_pretrained.py"
TINY = shlex.split(
    "--emb-dim 32 --n-layers 2 --n-heads 2 --context-length 32 --batch-size 4 "
    "--eval-freq 5 --eval-iter 1 --sample-tokens 3 --epochs 1"
)


@pytest.fixture
def run(monkeypatch, capsys):
    """run(script, *args): the script in this process; a hang (a pipe read) fails in 60 s."""

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))  # v2 reconfigures it

    def run(script, *args):
        def hung(*_):
            raise TimeoutError(f"{script.name} {args} hung")

        previous = signal.signal(signal.SIGALRM, hung)
        signal.alarm(60)
        try:
            return run_in_process(script, args, monkeypatch, capsys)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    return run


def all_finite(folder) -> bool:
    tensors = []
    for f in folder.glob("*.safetensors"):
        tensors += load_file(f).values()
    for f in folder.glob("*.pt"):
        state = torch.load(f, weights_only=True)
        tensors += [*state["model"].values()]
        tensors += [t for s in state["optimizer"]["state"].values() for t in s.values()]
    return all(torch.isfinite(t).all() for t in tensors)


def test_divergence_stops_the_run_and_keeps_the_good_files(run, tmp_path):
    out = tmp_path / "run"
    assert run(V1, *TINY, "--max-steps", "4", "--output-dir", out).returncode == 0
    good = (out / "model.safetensors").read_bytes()

    done = run(V1, *TINY, *shlex.split("--max-steps 15 --lr 1000 --save-every 2 --output-dir"), out)
    assert done.returncode == 1
    assert done.stderr.endswith(
        "error: the training loss is nan at step 3: lower --lr or set --grad-clip "
        "(--allow-nonfinite skips such steps); the last checkpoint, "
        f"{out / 'checkpoint.pt'}, is from step 2\n"
    )
    assert "Traceback" not in done.stderr
    assert (out / "model.safetensors").read_bytes() == good
    assert torch.load(out / "checkpoint.pt", weights_only=True)["state"]["step"] == 2
    assert all_finite(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "loss-plot.png",
        "model.safetensors",
    ]

    # Asked to go on: the non-finite steps are skipped, named, and nothing non-finite is saved.
    skip = run(
        V1,
        *TINY,
        *shlex.split("--max-steps 8 --lr 1000 --allow-nonfinite --output-dir"),
        tmp_path / "skip",
    )
    assert skip.returncode == 0, skip.stderr
    assert "warning: step 3 skipped: its loss or gradient norm is not finite" in skip.stderr
    assert all_finite(tmp_path / "skip")


def test_a_non_finite_gradient_norm_stops_training(tiny_model):
    """Loss finite, one gradient infinite (clipping on): stopped before the optimizer step."""
    tokens = np.arange(400) % 50
    windows = TokenWindows(tokens, 32, 32)
    optimizer = torch.optim.AdamW(tiny_model.parameters(), lr=1e-3)
    settings = TrainSettings(batch_size=2, max_steps=3, grad_clip=1.0)
    trainer = Trainer(tiny_model, optimizer, windows, windows, settings, torch.device("cpu"))
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    tiny_model.final_norm.scale.register_hook(lambda g: g * float("inf"))
    with pytest.raises(NonFiniteError, match=r"^the gradient norm is inf at step 0$"):
        trainer.run()
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())


def test_pipes_and_devices_are_refused_before_reading(run, tmp_path):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("some text " * 100)
    os.mkfifo(folder / "b.txt")
    model = tmp_path / "m.safetensors"
    save_model(GPTModel(GPTConfig(context_length=32, emb_dim=32, n_heads=2, n_layers=1)), model)
    out = tmp_path / "out"
    cases = [
        ((V1, "--data", "/dev/zero"), "/dev/zero: is a character device, not a file or a folder"),
        ((V1, "--data", pipe), f"{pipe}: is a named pipe, not a file or a folder"),
        ((V1, "--data", folder), f"{folder}: b.txt is a named pipe, not a file"),
        ((V1, "--init-from", pipe), f"{pipe}: is a named pipe"),
        ((V1, "--resume", pipe), f"{pipe}: is a named pipe"),
        ((V1, "--eval-only", "--init-from", model, "--data", pipe), f"{pipe}: is a named pipe"),
        ((V2, "--checkpoint", pipe), f"{pipe}: is a named pipe"),
        ((V2, "--checkpoint-dir", pipe), f"{pipe}: is a named pipe"),
        (("mygpt.export", pipe, "--to", "hf", tmp_path / "hf"), f"{pipe}: is a named pipe"),
    ]
    for (script, *args), message in cases:
        trains = script == V1 and "--eval-only" not in args
        done = run(script, *args, "--output-dir", out) if trains else run(script, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith(f"error: {message}"), args
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not out.exists() or not any(out.iterdir())


def test_a_second_run_into_the_same_folder_is_refused(run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from mygpt.training.outputs import claim_output_dir\n"
            "with claim_output_dir(Path(sys.argv[1])):\n"
            " print('held', flush=True); time.sleep(120)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        done = run(V1, *TINY, "--max-steps", "2", "--output-dir", out)
        assert (done.returncode, done.stdout) == (2, "")
        assert (
            done.stderr == f"error: --output-dir {out} is in use by another run "
            f"(pid {holder.pid})\n"
        )
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
        # Scoring writes nothing, so it takes no lock and runs beside the holder.
        model = tmp_path / "m.safetensors"
        save_model(GPTModel(GPTConfig(context_length=32, emb_dim=32, n_heads=2, n_layers=1)), model)
        score = run(V1, "--eval-only", "--init-from", model)
        assert score.returncode == 0, score.stderr
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its lock file (and pid) is still there, and taken over.
    assert (out / LOCK_FILE).read_text() == f"{holder.pid}\n"
    done = run(V1, *TINY, "--max-steps", "2", "--output-dir", out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["loss-plot.png", "model.safetensors"]


def test_folder_flags_under_a_file_are_one_line(run, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    under = tmp_path / "file" / "x"
    for script, args in ((V2, ()), (V1, ("--init-from", "124M", "--output-dir", tmp_path / "o"))):
        done = run(script, *args, "--models-dir", under, "--base-url", "http://127.0.0.1:9")
        assert done.returncode == 2
        assert done.stderr.endswith(
            f"error: --models-dir {under}: a part of it is a file, not a folder\n"
        )
        assert "Traceback" not in done.stderr and "Downloading" not in done.stdout

    # A chat history that cannot be written costs a warning, not the chat.
    def end_of_input(prompt):
        raise EOFError

    monkeypatch.setattr("builtins.input", end_of_input)
    assert list(terminal_lines("> ", under / "chat-history")) == []
    assert capsys.readouterr().err == (
        f"warning: the chat history was not saved to {under / 'chat-history'} (Not a directory)\n"
    )


def test_read_only_data_tokenizes_into_the_cache(tmp_path, tokenizer, monkeypatch):
    data = tmp_path / "shared" / "corpus.txt"
    data.parent.mkdir()
    data.write_text("A read-only dataset. " * 2000)
    monkeypatch.setenv("MYGPT_CACHE_DIR", str(tmp_path / "cache"))
    tokenize = mygpt.data.corpus._tokenize_to_file

    def read_only_beside_data(files, total, tok, token_file, *args):
        if token_file.parent == data.parent:  # as root, chmod cannot make a folder read-only
            raise OSError(errno.EROFS, "Read-only file system")
        return tokenize(files, total, tok, token_file, *args)

    monkeypatch.setattr(mygpt.data.corpus, "_tokenize_to_file", read_only_beside_data)
    lines = []
    corpus = load_corpus(data, tokenizer, memmap=True, log=lines.append)
    assert corpus.token_file.parent == tmp_path / "cache" / "tokens"
    assert (
        lines[0] == "Cannot write the token file beside the data (Read-only file system): "
        "using the cache"
    )
    assert lines[1].endswith(f": {corpus.token_file}")
    ids = tokenizer.encode(data.read_text())
    assert np.concatenate([corpus.train, corpus.val]).tolist() == ids
    assert sorted(p.name for p in data.parent.iterdir()) == ["corpus.txt"]
    again = []
    load_corpus(data, tokenizer, memmap=True, log=again.append)
    assert again == [f"Using the tokens cached in {corpus.token_file} ({len(ids):,} tokens)"]


def test_a_folder_that_cannot_be_locked_warns_and_runs(tmp_path, monkeypatch, capsys):
    import mygpt.training.outputs as outputs

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(outputs.fcntl, "flock", no_locks)
    with outputs.claim_output_dir(tmp_path):
        ran = True
    assert ran and not (tmp_path / LOCK_FILE).exists()
    assert capsys.readouterr().err == (
        f"warning: --output-dir {tmp_path} cannot be locked (No locks available): a second run "
        "into it would not be noticed\n"
    )

"""MyGPT_v1_local-train.py end to end, as a user runs it (tiny model, real text)."""

import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, default_sigint

from mygpt import load_model

SCRIPT = ROOT / "MyGPT_v1_local-train.py"
TINY_FLAGS = ["--emb-dim", "32", "--n-layers", "2", "--n-heads", "2", "--context-length", "128",
              "--batch-size", "4", "--eval-freq", "3", "--sample-tokens", "10"]  # fmt: skip


def run(*args, cwd=ROOT, timeout=300):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("run") / "out"
    return out_dir, run("--epochs", "2", "--output-dir", out_dir, *TINY_FLAGS)


def test_tiny_run_end_to_end(two_epochs):
    out_dir, out = two_epochs
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for expected in [
        "=========== UNTRAINED GPT MODEL ===========",
        "Untrained model created with the following configuration:",
        "- vocab_size: 50257",
        "- context_length: 128",
        "- emb_dim: 32",
        "- n_heads: 2",
        "- n_layers: 2",
        "- drop_rate: 0.1",
        "- qkv_bias: False",
        "=========== TRAINING OUR GPT MODEL ===========",
        "Loaded training data from: the-verdict.txt",
        "Starting Training...",
        "=========== POST TRAINING OUTPUT ===========",
    ]:
        assert expected in lines
    # 4,612 training tokens make 36 windows of 128: 9 steps of 4 per epoch, evaluated every 3.
    evals = [line for line in lines if line.startswith("Ep ")]
    steps = [
        (int(m[1]), int(m[2])) for m in (re.match(r"Ep (\d+) \(Step (\d{6})\)", e) for e in evals)
    ]
    assert steps == [(1, 0), (1, 3), (1, 6), (2, 9), (2, 12), (2, 15)]
    pattern = r"Ep \d+ \(Step \d{6}\): Train loss \d+\.\d{3}, Val loss \d+\.\d{3}"
    assert all(re.fullmatch(pattern, e) for e in evals)
    samples = [line for line in lines if line.startswith(">>> ")]
    assert len(samples) == 3 and all(s.startswith(">>> Every effort moves you") for s in samples)
    assert samples[-1] == samples[-2]  # the post-training sample is the last epoch's model
    assert re.fullmatch(r"Training completed in \d+\.\d\d minutes\.", lines[-3])
    plot, weights = out_dir / "loss-plot.png", out_dir / "model.safetensors"
    assert lines[-2:] == [f"Loss plot saved to: {plot}", f"Model weights saved to: {weights}"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_model(weights).cfg.emb_dim == 32
    assert "Traceback" not in out.stderr


def test_same_seed_same_run(two_epochs, tmp_path):
    """A new 1-epoch run prints exactly the first epoch of the 2-epoch run: nothing is random."""
    one = run("--epochs", "1", "--output-dir", tmp_path, *TINY_FLAGS)
    progress = [line for line in one.stdout.splitlines() if line.startswith(("Ep", ">>>"))]
    assert len(progress) == 5  # 3 evaluations, the epoch's sample, the post-training sample
    assert "\n".join(progress[:4]) in two_epochs[1].stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "is empty"),
        (b"\xff\xfe not utf-8", "is not UTF-8 text"),
        (b"Too short a story. " * 20, "too short: its training part has"),
        # Long enough to train on, but 10% of it is not one window plus one token.
        (("The story goes on. " * 140).encode(), "too short: its validation part has"),
    ],
)
def test_bad_data_file(tmp_path, content, message):
    path = tmp_path / "story.txt"
    if content is not None:
        path.write_bytes(content)
    out = run("--data", path, "--output-dir", tmp_path, *TINY_FLAGS)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"error: {path}: {message}")
    assert not (tmp_path / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "invalid positive integer value: '0'"),
        (["--emb-dim", "30", "--n-heads", "4"], "--emb-dim 30 must be divisible by --n-heads 4"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
    ],
)
def test_bad_flags(flags, message):
    out = run(*flags)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_ctrl_c_is_a_short_message(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--epochs", "50", "--output-dir", tmp_path, *TINY_FLAGS],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_sigint,
    )  # fmt: skip
    try:
        assert proc.stdout.readline()  # it has started printing: we are past the imports
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.strip() == "Interrupted."

"""MyGPT_v1_local-train.py end to end, as a user runs it (tiny model, real text)."""

import re
import shlex
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, default_sigint

from mygpt import load_model

pytestmark = pytest.mark.slow  # starts scripts or TensorFlow: `pytest -m "not slow"` skips it

SCRIPT = ROOT / "MyGPT_v1_local-train.py"
TINY_FLAGS = shlex.split(
    "--emb-dim 32 --n-layers 2 --n-heads 2 --context-length 128 --batch-size 4 "
    "--eval-freq 3 --sample-tokens 10"
)
# Without dropout, N processes and one process see the same numbers (dropout masks differ).
DETERMINISTIC = [*TINY_FLAGS, "--drop-rate", "0"]


def run(*args, cwd=ROOT, timeout=300):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("run") / "out"
    return out_dir, run("--epochs", "2", "--output-dir", out_dir, *DETERMINISTIC)


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
        "- drop_rate: 0.0",
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
def test_bad_data_file(tmp_path, content, message, v1_here):
    path = tmp_path / "story.txt"
    if content is not None:
        path.write_bytes(content)
    out = v1_here("--data", path, "--output-dir", tmp_path, *TINY_FLAGS)
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
def test_bad_flags(flags, message, v1_here):
    out = v1_here(*flags)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def evals(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("Ep ")]


def test_ctrl_c_saves_a_checkpoint_and_resume_continues_the_run(two_epochs, tmp_path):
    """Interrupted early, then resumed: the rest of the output is the uninterrupted run's."""
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--epochs", "2", "--output-dir", tmp_path, *DETERMINISTIC],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        for line in proc.stdout:
            if line.startswith("Ep 1 (Step 000000)"):  # training, past the first step
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    checkpoint = tmp_path / "checkpoint.pt"
    assert proc.returncode == 130, err
    m = re.search(r"Interrupted after step (\d+) of 18; checkpoint saved to (.+)\n", err)
    assert m and m[2] == str(checkpoint) and checkpoint.is_file()
    assert err.splitlines()[-1] == f"Continue with: --resume {checkpoint}"
    assert "Stopping after this step" in err and "Traceback" not in err
    stopped_at = int(m[1])
    assert 1 <= stopped_at < 18

    resumed = run("--resume", checkpoint)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming from {checkpoint} at step {stopped_at} of 18" in resumed.stdout
    full = two_epochs[1].stdout
    later = [e for e in evals(full) if int(e.split("Step ")[1][:6]) >= stopped_at]
    assert evals(resumed.stdout) == later
    samples = [line for line in resumed.stdout.splitlines() if line.startswith(">>> ")]
    assert (
        samples == [line for line in full.splitlines() if line.startswith(">>> ")][-len(samples) :]
    )
    weights = load_model(tmp_path / "model.safetensors").state_dict()
    for name, value in load_model(two_epochs[0] / "model.safetensors").state_dict().items():
        assert torch.equal(weights[name], value), name

    bad = run("--resume", checkpoint, "--emb-dim", "64")
    assert bad.returncode == 2
    assert bad.stderr == "error: --resume: the checkpoint's model has --emb-dim 32, not 64\n"
    missing = run("--resume", tmp_path / "nothing.pt")
    assert missing.returncode == 2
    assert missing.stderr == f"error: {tmp_path / 'nothing.pt'}: no such file\n"


def test_two_gloo_processes_follow_one_process(two_epochs, tmp_path):
    """torchrun, 2 CPU processes x 2 windows = 1 process x 4 windows; resume works under DDP."""

    def torchrun(*args):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=2",
                str(SCRIPT),
                *map(str, args),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = torchrun(
        *DETERMINISTIC,
        *shlex.split("--batch-size 2 --epochs 2 --max-steps 4 --save-every 4 --output-dir"),
        tmp_path,
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("UNTRAINED GPT MODEL") == 1  # only rank 0 prints
    assert "parameters, on cpu, 2 processes)" in first.stdout
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["state"]["step"] == 4
    assert len(checkpoint["rng"]) == 2  # each process's random state, to resume it exactly

    resumed = torchrun("--resume", tmp_path / "checkpoint.pt", "--max-steps", "18")
    assert resumed.returncode == 0, resumed.stderr
    single = two_epochs[1].stdout  # the same 18 steps of 4 windows in one process
    assert evals(first.stdout) + evals(resumed.stdout) == evals(single)
    assert resumed.stdout.count(">>> ") == single.count(">>> ")
    weights = load_model(tmp_path / "model.safetensors").state_dict()
    for name, value in load_model(two_epochs[0] / "model.safetensors").state_dict().items():
        torch.testing.assert_close(weights[name], value, rtol=0, atol=1e-5)

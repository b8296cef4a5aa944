"""MyGPT_v1_local-train.py --lora-rank end to end: listing, files, resume, torchrun, errors."""

import hashlib
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TRAINED
from safetensors.torch import load_file
from test_v1_script import evals
from test_v2_script import HEADER
from test_v2_script import run as run_v2

from mygpt.lora import TARGETS, read_adapter
from mygpt.training.preflight import lora_parameters, n_parameters

pytestmark = pytest.mark.slow  # starts the scripts: `pytest -m "not slow"` skips it

SCRIPT = ROOT / "MyGPT_v1_local-train.py"
RUN = shlex.split(
    "--batch-size 2 --eval-freq 2 --eval-iter 1 --sample-tokens 8 --lr 3e-3 "
    "--lora-rank 4 --lora-alpha 8"
)


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """About 1,100 tokens of the-verdict: 15 windows of 64 for training, 1 for validation."""
    path = tmp_path_factory.mktemp("text") / "part.txt"
    path.write_text((ROOT / "the-verdict.txt").read_text()[:5000])
    return path


def run(*args, torchrun=False):
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return subprocess.run(
        [sys.executable, *(launcher if torchrun else []), str(SCRIPT), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def four_steps(trained_model_file, text, tmp_path_factory):
    """A LoRA run of 4 steps on the pydoc model, checkpointing at 2 and at the end."""
    out = tmp_path_factory.mktemp("lora4")
    before = digest(trained_model_file)
    done = run(
        "--init-from",
        trained_model_file,
        "--data",
        text,
        *RUN,
        "--max-steps",
        "4",
        "--save-every",
        "2",
        "--output-dir",
        out,
    )
    assert done.returncode == 0, done.stderr
    assert digest(trained_model_file) == before  # the base file is never written
    return out, done


def test_listing_files_and_merged_weights(four_steps, trained_model_file, text):
    out, done = four_steps
    n_lora = lora_parameters(TRAINED, 4, tuple(TARGETS))
    total = n_parameters(TRAINED, tied=False) + n_lora
    assert n_lora == 2 * 4 * (4 * 128 + 2 * 320) == 9216
    share = f"{100 * n_lora / total:.2f}"
    expected = (
        f"LoRA rank 4, alpha 8 on query, key, value, out_proj, ff_in, ff_out: "
        f"trainable 9,216 of {total:,} ({share}%)"
    )
    assert expected in done.stdout.splitlines()
    assert "LoRA adapters saved to: " + str(out / "adapter.safetensors") in done.stdout

    # model.safetensors = base + (alpha / rank) B A, computed here in NumPy from the files.
    base, merged = load_file(trained_model_file), load_file(out / "model.safetensors")
    info, adapters = read_adapter(out / "adapter.safetensors")
    assert (info.rank, info.alpha, info.base) == (4, 8.0, str(trained_model_file))
    assert set(merged) == set(base)
    for name in base:
        a, b = f"{name[: -len('.weight')]}.lora.A", f"{name[: -len('.weight')]}.lora.B"
        expected = base[name].numpy()
        if a in adapters:
            expected = expected + 2.0 * adapters[b].numpy() @ adapters[a].numpy()
            assert adapters[b].any()  # trained
        np.testing.assert_allclose(merged[name].numpy(), expected, rtol=1e-6, atol=1e-7)

    # The merged file is an ordinary model file: v2 chats with it, v1 scores it; the base with
    # the adapter scores the same.
    chat = run_v2(
        "--checkpoint",
        out / "model.safetensors",
        "--max-new-tokens",
        "5",
        stdin="Every effort moves\nexit\n",
    )
    assert chat.returncode == 0 and HEADER in chat.stdout.decode(), chat.stderr
    merged_score = run("--eval-only", "--init-from", out / "model.safetensors", "--data", text)
    adapted = run(
        "--eval-only",
        "--init-from",
        trained_model_file,
        "--lora-adapter",
        out / "adapter.safetensors",
        "--data",
        text,
    )
    assert merged_score.returncode == adapted.returncode == 0, adapted.stderr
    assert merged_score.stdout.split(" over ")[0] == adapted.stdout.split(" over ")[0]
    assert merged_score.stdout.startswith("Loss ")


def test_resume_is_bit_exact_and_the_checkpoint_holds_only_adapters(
    four_steps, trained_model_file, text, tmp_path
):
    out, whole = four_steps
    first = run(
        "--init-from",
        trained_model_file,
        "--data",
        text,
        *RUN,
        "--max-steps",
        "2",
        "--save-every",
        "2",
        "--output-dir",
        tmp_path,
    )
    assert first.returncode == 0, first.stderr
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(checkpoint["model"]) == set(load_file(out / "adapter.safetensors"))
    assert checkpoint["lora"]["rank"] == 4 and checkpoint["state"]["step"] == 2
    size = (tmp_path / "checkpoint.pt").stat().st_size
    assert size < 0.1 * trained_model_file.stat().st_size  # adapters and their AdamW state

    resumed = run("--resume", tmp_path / "checkpoint.pt", "--max-steps", "4")
    assert resumed.returncode == 0, resumed.stderr
    assert evals(first.stdout) + evals(resumed.stdout) == evals(whole.stdout)
    ours, theirs = (
        load_file(tmp_path / "adapter.safetensors"),
        load_file(out / "adapter.safetensors"),
    )
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert digest(tmp_path / "model.safetensors") == digest(out / "model.safetensors")


def test_torchrun_resumes_a_lora_run(trained_model_file, text, tmp_path):
    """2 gloo processes x 1 window = 1 process x 2 windows, then resumed under torchrun."""
    flags = ["--init-from", trained_model_file, "--data", text, *RUN]
    first = run(
        *flags,
        *shlex.split("--batch-size 1 --max-steps 2 --save-every 2 --output-dir"),
        tmp_path,
        torchrun=True,
    )
    assert first.returncode == 0, first.stderr
    resumed = run("--resume", tmp_path / "checkpoint.pt", "--max-steps", "4", torchrun=True)
    assert resumed.returncode == 0, resumed.stderr
    single = run(*flags, "--max-steps", "4", "--output-dir", tmp_path / "single")
    assert single.returncode == 0, single.stderr
    assert evals(first.stdout) + evals(resumed.stdout) == evals(single.stdout)
    ours, theirs = (
        load_file(tmp_path / "adapter.safetensors"),
        load_file(tmp_path / "single" / "adapter.safetensors"),
    )
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=1e-5)


def test_user_errors_are_one_line(four_steps, trained_model_file, text, v1_here):
    out, _ = four_steps
    cases = {
        (
            "--init-from",
            out / "model.safetensors",
            "--lora-adapter",
            out / "adapter.safetensors",
        ): "was trained on other base weights",
        ("--init-from", trained_model_file, "--lora-rank", "0"): "invalid positive integer",
        (
            "--init-from",
            trained_model_file,
            "--lora-rank",
            "65",
        ): "--lora-rank 65: must be between 1 and the layers' width 64",
        (
            "--init-from",
            trained_model_file,
            "--lora-rank",
            "4",
            "--lora-targets",
            "q",
        ): "--lora-targets 'q': choose from query, key, value, out_proj, ff_in, ff_out",
        ("--init-from", out / "checkpoint.pt"): "a LoRA run's checkpoint holds only its adapters",
        ("--init-from", trained_model_file, "--lora-adapter", text): "not an adapter",
        ("--lora-dropout", "0.1"): "--lora-dropout applies to LoRA: add --lora-rank N",
    }
    for args, message in cases.items():
        done = v1_here(*args, "--data", text, "--output-dir", out / "refused")
        assert done.returncode == 2, (args, done.stderr)
        last = done.stderr.splitlines()[-1]  # argparse's own errors follow its usage lines
        assert message in last and "Traceback" not in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1 or last.startswith("MyGPT_v1"), done.stderr
        assert not (out / "refused" / "model.safetensors").exists()


def test_lora_on_a_new_model(text, tmp_path, v1_here):
    """Without --init-from the base is the seeded new model; the merged file is saved as usual."""
    shape = ["--emb-dim", "32", "--n-layers", "1", "--n-heads", "2", "--context-length", "32"]
    done = v1_here("--data", text, *shape, "--max-steps", "2", *RUN, "--output-dir", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "trainable 2,304 of " in done.stdout  # 1 layer x rank 4 x (4 x 64 + 2 x 160)
    info, _ = read_adapter(tmp_path / "adapter.safetensors")
    assert info.base == "a new model (--seed 123)"


def test_lora_and_full_fine_tuning_train_on_the_same_batches(
    trained_model_file, text, tmp_path, v1_here
):
    """At a vanishing learning rate both runs keep the model (B = 0 at the start), so equal Ep
    lines mean equal batches: the adapters' initialisation does not move the data order."""
    args = [
        *("--init-from", trained_model_file, "--data", text, "--lr", "1e-30"),
        *("--max-steps", "4", "--eval-freq", "2", "--eval-iter", "1"),
        *("--batch-size", "2", "--sample-tokens", "1"),
    ]
    full = v1_here(*args, "--output-dir", tmp_path / "full")
    lines = evals(full.stdout)
    assert full.returncode == 0 and len(lines) == 2, full.stderr  # steps 0 and 2
    assert lines[0].split(",")[0] != lines[1].split(",")[0]  # two batches that tell apart
    for lora in (
        ["--lora-rank", "4"],
        ["--lora-rank", "2", "--lora-targets", "value", "--lora-dropout", "0"],
    ):
        done = v1_here(*args, *lora, "--output-dir", tmp_path / "lora")
        assert done.returncode == 0, done.stderr
        assert evals(done.stdout) == lines

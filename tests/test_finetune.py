"""MyGPT_v1_local-train.py --init-from and --eval-only, end to end (tiny GPT-2 checkpoints)."""

import re
import shlex
import shutil

import numpy as np
import pytest
import torch
from conftest import CKPT_SHAPE, ROOT
from http_server import FileServer
from safetensors import safe_open
from test_evaluate import reference_loss
from test_v1_script import evals
from test_v2_script import HEADER, closed_port_url
from test_v2_script import run as run_v2

from mygpt import complete_text, get_tokenizer, load_gpt2, load_model

pytestmark = pytest.mark.slow  # starts scripts or TensorFlow: `pytest -m "not slow"` skips it

RESULT = re.compile(r"Loss (\d+\.\d{4}), perplexity (\d+\.\d\d) over (\d+) tokens of (.+)")
SMALL_RUN = ["--batch-size", "4", "--eval-freq", "2", "--sample-tokens", "8"]


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """About 250 tokens of the-verdict, in a file."""
    path = tmp_path_factory.mktemp("text") / "part.txt"
    path.write_text((ROOT / "the-verdict.txt").read_text()[:1100])
    return path


def score(out) -> tuple[float, int]:
    assert out.returncode == 0, out.stderr
    line = out.stdout if isinstance(out.stdout, str) else out.stdout.decode()
    m = RESULT.fullmatch(line.rstrip("\n"))
    assert m, line
    return float(m[1]), int(m[3])


def test_eval_only_of_a_downloaded_size_equals_numpy(tf_checkpoint, text, tmp_path, v1_here):
    """--init-from 124M downloads as v2 does; the score equals an independent computation."""
    folder, arrays = tf_checkpoint
    with FileServer(folder.parent) as server:
        out = v1_here(
            "--eval-only",
            "--init-from",
            "124M",
            "--models-dir",
            tmp_path,
            "--base-url",
            server.url,
            "--data",
            text,
            "--context-length",
            "50",
        )
    loss, n = score(out)
    assert "Downloading model weights for the 124M parameter model" in out.stderr
    assert (tmp_path / "gpt2" / "124M" / "mygpt.safetensors").is_file()
    tokens = np.array(get_tokenizer().encode(text.read_text()))
    expected, n_expected = reference_loss(arrays, tokens, 50, CKPT_SHAPE["n_head"])
    assert n == n_expected == len(tokens) - 1
    assert abs(loss - expected) <= 1e-4
    perplexity = float(RESULT.fullmatch(out.stdout.rstrip())[2])
    assert perplexity == pytest.approx(np.exp(expected), rel=1e-4)
    assert out.stdout.endswith(f" over {n} tokens of {text}\n") and out.stdout.count("\n") == 1

    # The same weights as a folder (no network), and at the model's full context.
    local = tmp_path / "folder"
    shutil.copytree(tmp_path / "gpt2" / "124M", local)
    full, _ = score(v1_here("--eval-only", "--init-from", local, "--data", text))
    expected_full, _ = reference_loss(arrays, tokens, CKPT_SHAPE["n_ctx"], CKPT_SHAPE["n_head"])
    assert abs(full - expected_full) <= 1e-4


def test_fine_tune_a_gpt2_size_then_chat_and_fine_tune_again(models_dir, text, tmp_path, v1_here):
    out_dir = tmp_path / "ft"
    out = v1_here(
        "--init-from",
        "124M",
        "--models-dir",
        models_dir,
        "--base-url",
        closed_port_url(),
        *shlex.split("--context-length 64 --max-steps 4 --save-every 4 --output-dir"),
        out_dir,
        *SMALL_RUN,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    folder = models_dir / "gpt2" / "124M"
    for expected in [
        "=========== PRETRAINED GPT MODEL ===========",
        "Model loaded with the following configuration:",
        "- vocab_size: 50257",
        "- context_length: 64",  # the length used, not the checkpoint's 128
        "- emb_dim: 64",
        "- n_heads: 4",
        "- n_layers: 2",
        "- drop_rate: 0.0",
        "- qkv_bias: True",
        f"Weights from: OpenAI's GPT-2 124M ({folder})",
        "Fine-tuning with lr 5e-05, drop rate 0, weight decay 0.1",
        "Starting Training...",
    ]:
        assert expected in lines
    assert [e.split(":")[0] for e in evals(out.stdout)] == [
        "Ep 1 (Step 000000)",
        "Ep 1 (Step 000002)",
    ]
    gpt2 = load_gpt2(folder)
    weights = out_dir / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        assert "out_head.weight" not in f.keys()  # noqa: SIM118 (tied: saved once)
    tuned = load_model(weights)
    assert tuned.is_tied and tuned.cfg.context_length == 64
    assert not torch.equal(tuned.tok_emb.weight, gpt2.tok_emb.weight)  # it trained
    # lr 5e-5 for 4 steps: the first positions, moved a little from GPT-2's
    torch.testing.assert_close(tuned.pos_emb.weight, gpt2.pos_emb.weight[:64], atol=1e-3, rtol=0)

    # The fine-tuned file completes text in v2, and fine-tunes again (--init-from a v1 file).
    expected = complete_text(tuned, get_tokenizer(), "Every effort moves you", 6)
    chat = run_v2(
        "--checkpoint",
        weights,
        "--temperature",
        "0",
        "--max-new-tokens",
        "6",
        stdin="Every effort moves you\nexit\n",
    )
    assert chat.returncode == 0, chat.stderr.decode()
    assert f"MyGPT: {expected}" in chat.stdout.decode().splitlines()
    assert HEADER in chat.stdout.decode().splitlines()

    again = v1_here(
        "--init-from",
        out_dir / "checkpoint.pt",
        "--max-steps",
        "1",
        "--output-dir",
        tmp_path / "again",
        *SMALL_RUN,
    )
    assert again.returncode == 0, again.stderr
    assert "- context_length: 64" in again.stdout.splitlines()
    assert f"Weights from: {out_dir / 'checkpoint.pt'}" in again.stdout.splitlines()
    assert "Starting Training..." in again.stdout  # fresh optimizer and step count: no resume
    assert load_model(tmp_path / "again" / "model.safetensors").is_tied

    resumed = v1_here("--resume", out_dir / "checkpoint.pt", "--max-steps", "6")
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming from {out_dir / 'checkpoint.pt'} at step 4 of 6" in resumed.stdout
    assert load_model(weights).is_tied


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--emb-dim", "32"], "--emb-dim 32, the weights have 64"),
        (
            ["--n-layers", "3", "--n-heads", "8"],
            "--n-heads 8, the weights have 4; --n-layers 3, the weights have 2",
        ),
        (
            ["--context-length", "256"],
            "--context-length 256 is longer than the weights' 128 positions",
        ),
    ],
)
def test_shape_flags_that_contradict_the_weights(models_dir, tmp_path, flags, message, v1_here):
    folder = models_dir / "gpt2" / "124M"
    out = v1_here("--init-from", folder, *flags, "--output-dir", tmp_path)
    assert out.returncode == 2
    assert out.stderr == f"error: --init-from {folder}: {message}\n"
    assert not list(tmp_path.iterdir())


def test_contradictions_and_bad_sources_are_refused_before_any_download(tmp_path, v1_here):
    url = closed_port_url()
    out = v1_here(
        "--init-from", "355M", "--emb-dim", "768", "--models-dir", tmp_path, "--base-url", url
    )
    assert out.returncode == 2
    assert out.stderr == "error: --init-from 355M: --emb-dim 768, the weights have 1024\n"
    assert not list(tmp_path.iterdir())  # nothing downloaded, not even a folder
    missing = v1_here("--init-from", tmp_path / "nothing", "--eval-only")
    assert missing.returncode == 2 and missing.stderr == (
        f"error: {tmp_path / 'nothing'}: no such file or folder "
        "(GPT-2 sizes: 124M, 355M, 774M, 1558M)\n"
    )
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    junk = v1_here("--init-from", tmp_path / "junk.safetensors")
    assert junk.returncode == 2 and junk.stderr.startswith(f"error: {tmp_path}/junk.safetensors")
    assert "Traceback" not in junk.stderr

    # A missing --data is refused before the weights are downloaded, training or scoring.
    for mode in ([], ["--eval-only"]):
        no_data = v1_here(
            "--init-from",
            "124M",
            "--models-dir",
            tmp_path,
            "--base-url",
            url,
            "--data",
            tmp_path / "none.txt",
            *mode,
        )
        assert (no_data.returncode, no_data.stderr) == (
            2,
            f"error: {tmp_path}/none.txt: no such file\n",
        )
        assert not (tmp_path / "gpt2").exists()


def test_eval_only_scores_a_new_model_and_refuses_an_empty_text(tmp_path, text, v1_here):
    """Without weights it scores a fresh model of the flags' shape: near log(50257) = 10.8."""
    loss, n = score(
        v1_here(
            "--eval-only",
            "--data",
            text,
            *shlex.split("--emb-dim 32 --n-layers 1 --n-heads 2 --context-length 64"),
        )
    )
    assert (
        abs(loss - np.log(50257)) < 0.3 and n == len(get_tokenizer().encode(text.read_text())) - 1
    )
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n")
    bad = v1_here("--eval-only", "--data", empty, "--emb-dim", "32", "--n-heads", "2")
    assert bad.returncode == 2 and bad.stderr == f"error: {empty}: is empty\n"

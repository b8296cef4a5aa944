"""MyGPT_v2_pretrained.py end to end, with piped stdin and a loopback server."""

import shutil
import signal
import socket
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, default_sigint
from http_server import FileServer

from mygpt import (
    GPTConfig,
    GPTModel,
    Trainer,
    TrainSettings,
    complete_text,
    get_tokenizer,
    load_corpus,
    load_gpt2,
    make_optimizer,
    save_checkpoint,
    save_model,
)

pytestmark = pytest.mark.slow  # starts scripts or TensorFlow: `pytest -m "not slow"` skips it


SCRIPT = ROOT / "MyGPT_v2_pretrained.py"
HEADER = "MyGPT: Please enter a sentence to complete (enter 'exit' to end chat)"


def run(*args, stdin="", timeout=300):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
    )


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_first_and_second_run(tf_checkpoint, tmp_path):
    folder, _ = tf_checkpoint
    with FileServer(folder.parent) as server:
        first = run(
            "--models-dir",
            tmp_path,
            "--base-url",
            server.url,
            "--temperature",
            "0",
            stdin="Every effort moves you\nexit\n",
        )
    out = first.stdout.decode().splitlines()
    assert first.returncode == 0, first.stderr.decode()
    assert out[:6] == [
        "============================================",
        "=========== PRETRAINED GPT MODEL ===========",
        "============================================",
        "",
        "Downloading model weights for the 124M parameter model...",
        "",
    ]
    model = load_gpt2(tmp_path / "gpt2" / "124M")
    expected = complete_text(model, get_tokenizer(), "Every effort moves you", 50)
    assert out[6:] == [HEADER, "> Every effort moves you", f"MyGPT: {expected}", "> exit"]
    assert "model.ckpt.data-00000-of-00001: 100%" in first.stderr.decode()  # the progress bars

    # The server is gone: the second run finds everything on disk and downloads nothing.
    second = run(
        "--models-dir",
        tmp_path,
        "--base-url",
        closed_port_url(),
        "--temperature",
        "0",
        stdin="Every effort moves you\n",
    )
    assert second.returncode == 0, second.stderr.decode()
    assert second.stdout.decode().splitlines()[3:] == [
        "",
        HEADER,
        "> Every effort moves you",
        f"MyGPT: {expected}",
        "> ",
    ]


def test_awkward_input(models_dir):
    long_prompt = " ".join(["word"] * 300)  # 300 tokens: more than the 128-token context
    stdin = (
        b"\n   \nHello <|endoftext|> there\n"
        + long_prompt.encode()
        + b"\n\xff\xfe broken \xc3 bytes\nQuIT\nnot read\n"
    )
    out = run(
        "--models-dir",
        models_dir,
        "--base-url",
        closed_port_url(),
        "--seed",
        "3",
        "--max-new-tokens",
        "5",
        stdin=stdin,
    )
    assert out.returncode == 0 and b"Traceback" not in out.stderr, out.stderr.decode()
    lines = out.stdout.decode().splitlines()
    answers = [line for line in lines if line.startswith("MyGPT: ") and line != HEADER]
    assert len(answers) == 3
    assert answers[0].startswith("MyGPT: Hello <|endoftext|> there")
    assert answers[1].startswith(f"MyGPT: {long_prompt}")
    assert answers[2].startswith("MyGPT: \ufffd\ufffd broken \ufffd bytes")
    # The two blank lines are echoed and asked again; the next line is the first prompt.
    assert lines[lines.index(HEADER) + 1 :][:3] == ["> ", ">    ", "> Hello <|endoftext|> there"]
    assert "not read" not in out.stdout.decode()


def test_same_seed_same_completion(models_dir):
    args = ["--models-dir", models_dir, "--base-url", closed_port_url(), "--max-new-tokens", "20"]
    a, b = (run(*args, "--seed", "11", stdin="The weather\n") for _ in range(2))
    c = run(*args, "--seed", "12", stdin="The weather\n")
    assert a.returncode == 0 and a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_ctrl_c_at_the_prompt_ends_cleanly(models_dir):
    args = ["--models-dir", str(models_dir), "--base-url", closed_port_url()]
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        for line in proc.stdout:  # wait for the chat to start (ends early if the script fails)
            if line.strip() == HEADER:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err


def test_checkpoint_dir_loads_a_local_folder(models_dir, tmp_path):
    local = tmp_path / "my-gpt2"
    shutil.copytree(models_dir / "gpt2" / "124M", local)
    out = run(
        "--checkpoint-dir", local, "--temperature", "0", "--max-new-tokens", "3", stdin="Hi\n"
    )
    assert out.returncode == 0 and "Downloading" not in out.stdout.decode()
    assert "MyGPT: Hi" in out.stdout.decode()


def test_user_errors_are_one_line(tmp_path):
    down = run("--models-dir", tmp_path, "--base-url", closed_port_url())
    err = down.stderr.decode().splitlines()
    assert down.returncode == 1
    assert err[-1].startswith("error: could not download checkpoint (tried 127.0.0.1:")
    assert "Traceback" not in down.stderr.decode()
    assert not (tmp_path / "gpt2" / "124M" / "checkpoint").exists()

    missing = run("--checkpoint-dir", tmp_path / "nowhere")
    assert missing.returncode == 2
    assert (
        missing.stderr.decode()
        .strip()
        .endswith(
            "not a GPT-2 checkpoint folder "
            "(missing hparams.json, model.ckpt.index, model.ckpt.data-00000-of-00001)"
        )
    )

    bad_size = run("--model-size", "7B")
    assert bad_size.returncode == 2 and "invalid choice: '7B'" in bad_size.stderr.decode()


def test_completes_with_a_model_trained_by_v1(tmp_path, tokenizer):
    """--checkpoint takes v1's model.safetensors or its training checkpoint; the chat is as ever."""

    cfg = GPTConfig(context_length=32, emb_dim=32, n_heads=2, n_layers=2)
    torch.manual_seed(1)
    model = GPTModel(cfg)
    train, val = load_corpus(ROOT / "the-verdict.txt", tokenizer).windows(32, 32, 2)
    settings = TrainSettings(max_steps=3)
    optimizer = make_optimizer(model, settings.peak_lr, settings.weight_decay, "cpu")
    trainer = Trainer(model, optimizer, train, val, settings, torch.device("cpu"))
    trainer.run()
    save_model(model, tmp_path / "model.safetensors")
    save_checkpoint(trainer.state_dict(), tmp_path / "checkpoint.pt")
    expected = complete_text(model, tokenizer, "Every effort moves you", 12)

    for name in ("model.safetensors", "checkpoint.pt"):
        out = run(
            "--checkpoint",
            tmp_path / name,
            "--temperature",
            "0",
            "--max-new-tokens",
            "12",
            stdin="Every effort moves you\nexit\n",
        )
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.decode().splitlines()[3:] == [
            "",
            f"Loaded {tmp_path / name} (3,242,752 parameters)",
            "",
            HEADER,
            "> Every effort moves you",
            f"MyGPT: {expected}",
            "> exit",
        ]
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    bad = run("--checkpoint", tmp_path / "junk.pt")
    assert bad.returncode == 2 and bad.stderr.decode().startswith(
        f"error: {tmp_path / 'junk.pt'}: "
    )
    assert "Traceback" not in bad.stderr.decode()

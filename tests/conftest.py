import signal
import sys
from pathlib import Path

import pytest
import torch

from mygpt import GPTConfig, GPTModel, get_tokenizer

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).parent))  # for `reference`

TINY = GPTConfig(vocab_size=50257, context_length=32, emb_dim=32, n_heads=4, n_layers=2)


def default_sigint():
    """Popen preexec_fn: a child started from a background job inherits an ignored SIGINT,
    and Python then installs no KeyboardInterrupt handler; Ctrl-C tests need the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def tokenizer():
    return get_tokenizer()


@pytest.fixture
def tiny_model():
    """A small, randomly initialised model in eval mode (no dropout)."""
    torch.manual_seed(0)
    return GPTModel(TINY).eval()


# A small GPT-2 in OpenAI's TF layout, made once per test session by a child process (the test
# process must never import tensorflow). Real vocabulary, so the chat script can use it.
CKPT_SHAPE = {"n_layer": 2, "n_embd": 64, "n_head": 4, "n_ctx": 128, "n_vocab": 50257}


@pytest.fixture(scope="session")
def tf_checkpoint(tmp_path_factory):
    """(folder served as {root}/124M/, its arrays in OpenAI names with conv weights squeezed)."""
    import subprocess

    import numpy as np

    root = tmp_path_factory.mktemp("served")
    folder = root / "124M"
    s = CKPT_SHAPE
    args = [s["n_layer"], s["n_embd"], s["n_head"], s["n_ctx"], s["n_vocab"], 7]
    subprocess.run(
        [sys.executable, str(Path(__file__).with_name("make_tf_checkpoint.py")), str(folder)]
        + [str(a) for a in args],
        check=True,
        capture_output=True,
    )
    with np.load(str(folder) + ".npz") as npz:
        arrays = {k: (v[0] if v.ndim == 3 else v) for k, v in npz.items()}
    return folder, arrays


@pytest.fixture(scope="session")
def models_dir(tf_checkpoint, tmp_path_factory):
    """A models folder holding the downloaded and already converted 124M-named checkpoint."""
    from http_server import FileServer

    from mygpt import download_gpt2, load_gpt2

    folder, _ = tf_checkpoint
    models = tmp_path_factory.mktemp("models")
    with FileServer(folder.parent) as server:
        load_gpt2(download_gpt2("124M", models, base_url=server.url))
    return models

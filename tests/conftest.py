import runpy
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from mygpt import GPTConfig, GPTModel, get_tokenizer

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).parent))  # for `reference`
sys.path.insert(0, str(ROOT / "bench"))  # its helpers: pydoc_text, llamacpp (not a package)
from pydoc_text import pydoc_text  # noqa: E402 (real English that every Python ships)

TINY = GPTConfig(vocab_size=50257, context_length=32, emb_dim=32, n_heads=4, n_layers=2)


def default_sigint():
    """Popen preexec_fn: a child started from a background job inherits an ignored SIGINT,
    and Python then installs no KeyboardInterrupt handler; Ctrl-C tests need the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_in_process(script: Path | str, args, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """The script (a path, or a module name as for python -m) run in this process (runpy),
    reported as subprocess.run reports a child: for runs that end early, it saves starting
    Python and importing torch again (5-10 s each)."""
    monkeypatch.setattr(sys, "argv", [str(script), *map(str, args)])
    monkeypatch.chdir(ROOT)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        if isinstance(script, str):  # as `python -m` runs it: not the copy a test imported
            monkeypatch.delitem(sys.modules, f"{script}.__main__", raising=False)
            runpy.run_module(script, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr()
    return subprocess.CompletedProcess(sys.argv, exit.value.code, out.out, out.err)


@pytest.fixture
def v1_here(monkeypatch, capsys):
    """v1_here(*args): MyGPT_v1_local-train.py run in this process, for runs that end early."""
    return lambda *args: run_in_process(ROOT / "MyGPT_v1_local-train.py", args, monkeypatch, capsys)


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
def shared_tmp(tmp_path_factory, worker_id) -> Path:
    """A folder of this test run that its xdist workers share."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def made_once(folder: Path, make: Callable[[Path], None]) -> Path:
    """folder, made by make(folder) only by the first worker to ask; the others wait for it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if not (done := folder.with_name(folder.name + ".done")).exists():
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tf_checkpoint(shared_tmp):
    """(folder served as {root}/124M/, its arrays in OpenAI names with conv weights squeezed)."""
    import numpy as np

    def make(folder: Path) -> None:
        s = CKPT_SHAPE
        args = [s["n_layer"], s["n_embd"], s["n_head"], s["n_ctx"], s["n_vocab"], 7]
        subprocess.run(
            [sys.executable, str(Path(__file__).with_name("make_tf_checkpoint.py")), str(folder)]
            + [str(a) for a in args],
            check=True,
            capture_output=True,
        )

    folder = made_once(shared_tmp / "served" / "124M", make)
    with np.load(str(folder) + ".npz") as npz:
        arrays = {k: (v[0] if v.ndim == 3 else v) for k, v in npz.items()}
    return folder, arrays


@pytest.fixture(scope="session")
def models_dir(tf_checkpoint, shared_tmp):
    """A models folder holding the downloaded and already converted 124M-named checkpoint."""
    from http_server import FileServer

    from mygpt import download_gpt2, load_gpt2

    def make(models: Path) -> None:
        with FileServer(tf_checkpoint[0].parent) as server:
            load_gpt2(download_gpt2("124M", models, base_url=server.url))

    return made_once(shared_tmp / "models", make)


TRAINED = GPTConfig(
    vocab_size=50257, context_length=64, emb_dim=64, n_heads=4, n_layers=2, drop_rate=0.0
)


def train_on_pydoc(path: Path, steps: int = 150) -> None:
    """A small model trained on Python's documentation, saved to path: a model whose greedy
    text is real (peaked) predictions, not random ties. Untied head, no qkv bias: the book's."""
    from mygpt import save_model

    torch.manual_seed(123)
    prose = " ".join(pydoc_text()[:200_000].split())  # its code's indentation would be learnt first
    ids = torch.tensor(get_tokenizer().encode(prose))
    model = GPTModel(TRAINED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.1)
    T = TRAINED.context_length
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - T - 1, (8,))
        x = torch.stack([ids[s : s + T] for s in starts])
        y = torch.stack([ids[s + 1 : s + T + 1] for s in starts])
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_model(model.eval(), path)


@pytest.fixture(scope="session")
def trained_model_file(shared_tmp) -> Path:
    """model.safetensors of train_on_pydoc, made once per test run."""
    folder = made_once(shared_tmp / "trained", lambda f: (f.mkdir(), train_on_pydoc(f / "m")))
    return folder / "m"

"""The v2 chat in a real pseudo-terminal: line editing, history across runs, Ctrl-C."""

import os
import pty
import select
import sys
import time

import pytest
import torch
from conftest import ROOT, default_sigint

from mygpt import GPTConfig, GPTModel, complete_text, get_tokenizer, save_model

pytestmark = [
    pytest.mark.slow,  # starts the script
    pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal"),
]
LEFT, UP, CTRL_C, CTRL_D = b"\x1b[D", b"\x1b[A", b"\x03", b"\x04"


class Terminal:
    """The v2 script on a pseudo-terminal: type keys, wait for text, read the screen's bytes."""

    def __init__(self, *args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the script, with the terminal as stdin/stdout/stderr
            default_sigint()  # a background job's ignored SIGINT would make Ctrl-C do nothing
            os.chdir(ROOT)
            os.execv(sys.executable, [sys.executable, "MyGPT_v2_pretrained.py", *map(str, args)])
        self.output = b""
        self.seen = 0  # output before this was matched by an earlier wait_for

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait_for(self, text: str, timeout: float = 120) -> str:
        """Read until `text` appears after the last match; the output up to it, included."""
        start = self.seen
        end = time.monotonic() + timeout
        while (found := self.output.find(text.encode(), start)) < 0:
            if time.monotonic() > end or not self._read(end - time.monotonic()):
                raise AssertionError(f"{text!r} not seen; got {self.output[start:]!r}")
        self.seen = found + len(text)
        return self.output[start : self.seen].decode(errors="replace")

    def prompt(self) -> None:
        """Wait for the prompt: keys typed before it reach the terminal, not the line editor
        (and a Ctrl-C then interrupts whatever runs)."""
        self.wait_for("> ")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return True
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # the child has exited
            return False
        self.output += data
        return bool(data)

    def exit_code(self, timeout: float = 30) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self._read(0.2)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        raise AssertionError(f"the chat did not end; its last output: {self.output[-200:]!r}")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(context_length=64, emb_dim=32, n_heads=2, n_layers=2)).eval()
    return save_model(model, tmp_path_factory.mktemp("weights") / "model.safetensors"), model


def test_line_editing_history_and_ctrl_c(weights, tmp_path):
    path, model = weights
    tokenizer = get_tokenizer()
    flags = ["--checkpoint", path, "--models-dir", tmp_path, "--temperature", "0"]
    term = Terminal(*flags, "--max-new-tokens", "5")
    term.prompt()
    term.type(b"Hello wrld" + LEFT * 3 + b"o\r")  # the cursor moves: the "o" goes in the middle
    expected = complete_text(model, tokenizer, "Hello world", 5)
    assert f"MyGPT: {expected}\r\n" in term.wait_for(f"{expected}\r\n")
    term.prompt()
    term.type(b"/set max_new_tokens 100000\r")  # long enough to be interrupted
    term.wait_for("max_new_tokens = 100000")
    term.prompt()
    term.type(b"Every effort\r")
    term.wait_for("MyGPT: Every effort")
    time.sleep(0.5)  # let some of the completion stream
    term.type(CTRL_C)
    after = term.wait_for("> ")
    assert "^C" in after and "Traceback" not in after
    term.type(b"/set max_new_tokens 5\r")
    term.wait_for("max_new_tokens = 5")
    term.prompt()
    term.type(UP * 4 + b"\r")  # history, newest first: back to "Hello world"
    assert f"MyGPT: {expected}\r\n" in term.wait_for(f"{expected}\r\n", timeout=30)
    term.prompt()
    # CPython's readline loses a SIGINT that comes before it blocks in select(): no person is
    # that fast after a prompt appears, a test is.
    time.sleep(1.0)
    term.type(CTRL_C)  # at the prompt: the chat ends
    assert term.exit_code() == 0
    history = (tmp_path / "chat-history").read_text().splitlines()
    assert history == [
        "Hello world",
        "/set max_new_tokens 100000",
        "Every effort",
        "/set max_new_tokens 5",
        "Hello world",
    ]

    # A new run recalls the last one's prompts; Ctrl-D ends it.
    term = Terminal(*flags, "--max-new-tokens", "5")
    term.prompt()
    term.type(UP + b"\r")
    assert f"MyGPT: {expected}\r\n" in term.wait_for(f"{expected}\r\n", timeout=30)
    term.prompt()
    term.type(CTRL_D)
    assert term.exit_code() == 0
    assert "Traceback" not in term.output.decode(errors="replace")

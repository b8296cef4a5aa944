"""`mygpt serve` as a user starts it: the URL and a curl line, then SIGTERM lets the running
sequences finish and exits 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import openai
import pytest
import torch
from conftest import ROOT

from mygpt import GPTConfig, GPTModel
from mygpt.io.model_files import save_model

pytestmark = pytest.mark.slow  # starts the server as a command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_the_running_sequences_and_exits_0(tmp_path):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=50257, context_length=1024, emb_dim=64, n_heads=4, n_layers=2)
    save_model(GPTModel(cfg), path := tmp_path / "model.safetensors")
    port = free_port()
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "mygpt", "serve", str(path), "--port", str(port)]
    server = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        ready = server.stdout.readline()
        assert f"MyGPT serves {path} at http://127.0.0.1:{port}" in ready, server.stderr.read()
        curl = server.stdout.readline()
        assert curl.startswith(f"curl http://127.0.0.1:{port}/v1/completions")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        stream = client.completions.create(model="m", prompt="a", max_tokens=1000, stream=True)
        chunks = iter(stream)
        first = next(chunks)
        server.send_signal(signal.SIGTERM)
        rest = []
        reader = threading.Thread(target=lambda: rest.extend(chunks))
        reader.start()
        reader.join(timeout=60)
        assert rest and rest[-1].choices[0].finish_reason == "length"
        text = first.choices[0].text + "".join(c.choices[0].text for c in rest)
        assert len(text) > 0
        assert server.wait(timeout=60) == 0
        with pytest.raises(openai.APIConnectionError):
            client.models.list()
    finally:
        server.kill()
        server.wait()

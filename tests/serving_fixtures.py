"""A MyGPT server on loopback for tests: a small model's engine behind the real app and uvicorn,
in a thread of this process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import uvicorn

from mygpt import GPTConfig, GPTModel, get_tokenizer
from mygpt.inference.engine import Engine
from mygpt.inference.precision import for_inference
from mygpt.serving.app import ServerConfig, create_app

CFG = GPTConfig(vocab_size=50257, context_length=128, emb_dim=64, n_heads=4, n_layers=2)


def small_model(seed: int = 0) -> GPTModel:
    torch.manual_seed(seed)
    model = GPTModel(CFG).eval()
    with torch.no_grad():  # far-apart logits: greedy tokens do not hang on the last bit
        model.out_head.weight.mul_(20)
    return model


class SlowEngine(Engine):
    """An engine whose steps take at least `delay` seconds: long enough to leave mid-way."""

    delay = 0.02

    def step(self):
        time.sleep(self.delay)
        return super().step()


@contextmanager
def serving(
    model: GPTModel, engine_class=Engine, max_batch: int = 8, **config
) -> Iterator[tuple[str, object]]:
    """(base URL, the app) of a server running `model` until the block ends."""
    engine = engine_class(for_inference(model, "float32"), get_tokenizer(), max_batch=max_batch)
    app = create_app(engine, ServerConfig(model_name="tiny", **config))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class BrokenOnce(Engine):
    """An engine whose first step fails, as a bug would: the server must go on serving."""

    failed = False

    def step(self):
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in a step")
        return super().step()

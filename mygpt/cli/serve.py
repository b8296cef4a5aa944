"""Serve a model over HTTP with OpenAI's API (completions, chat), and a web page to try it."""

from __future__ import annotations

import argparse
import signal
from dataclasses import dataclass

import uvicorn

from mygpt.cli.common import (
    HelpFormatter,
    add_model_flags,
    add_settings,
    model_from_flags,
    run_main,
    settings_from,
)
from mygpt.inference.engine import Engine
from mygpt.inference.precision import PRECISIONS, for_inference
from mygpt.serving.app import ServerConfig, create_app
from mygpt.settings import require, require_positive, setting

SERVER = "server"


@dataclass(frozen=True)
class ServeSettings:
    """Where the server listens, what it runs on, and what it allows."""

    host: str = setting("127.0.0.1", "the address to listen on (0.0.0.0: every one)", group=SERVER)
    port: int = setting(8000, "the TCP port", group=SERVER)
    precision: str = setting(
        "float32",
        "weights for generation: bfloat16, int8, or auto (the fastest here); float32 is exact",
        group=SERVER,
        choices=PRECISIONS,
    )
    max_batch: int = setting(16, "sequences decoded together", group=SERVER, positive=True)
    max_queue: int = setting(
        64, "sequences that may wait for a slot; more get 503 and Retry-After", group=SERVER
    )
    api_key: str | None = setting(
        None, "require 'Authorization: Bearer KEY' on the API (not on / or /health)", group=SERVER
    )
    name: str | None = setting(None, "the model's name in the API (default: MODEL)", group=SERVER)

    def __post_init__(self) -> None:
        require(0 <= self.port <= 65535, "port", "must be 0 to 65535")
        require(self.max_queue >= 0, "max_queue", "must be at least 0")
        require_positive(self, "max_batch")


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    add_settings(p, ServeSettings)
    add_model_flags(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`mygpt serve MODEL`: load, then serve until Ctrl-C or SIGTERM (which lets the running
    sequences finish, then exits 0)."""
    args = parse_args(argv, prog)
    settings = settings_from(ServeSettings, args)
    model = model_from_flags(args)
    template, tokenizer = model.template, model.tokenizer
    fast = for_inference(model, settings.precision, log=print)
    del model  # the inference copy is all that serves: the training model's memory goes back
    engine = Engine(fast, tokenizer, settings.max_batch)
    config = ServerConfig(
        model_name=settings.name or str(args.model),
        template=template,
        max_queue=settings.max_queue,
        api_key=settings.api_key,
    )
    url = f"http://{settings.host}:{settings.port}"

    def ready() -> None:
        key = f" -H 'Authorization: Bearer {settings.api_key}'" if settings.api_key else ""
        print(f"MyGPT serves {config.model_name} at {url} (the web page: {url}/)")
        print(
            f"curl {url}/v1/completions -H 'Content-Type: application/json'{key} "
            '-d \'{"prompt": "Every effort moves you", "max_tokens": 20}\''
        )

    app = create_app(engine, config, on_ready=ready)
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning")
    )
    # uvicorn handles SIGTERM itself (no new connections, the open ones finish) and raises it
    # again once done: ignored then, so that a clean shutdown exits 0.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server.run()
    if not server.started:  # the port was taken, or the address is not this machine's
        raise SystemExit(1)


if __name__ == "__main__":
    run_main(main)

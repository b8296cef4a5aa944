"""The HTTP server: OpenAI's completions and chat on the batching engine, llama-server's
tokenize and detokenize, health, Prometheus metrics, and the web page at /.

Every request's sequences go to one engine, which a thread of its own steps (worker.py), so
concurrent requests decode in one batch. Errors are OpenAI's error object with the status a
client expects; nothing a client sends gets a 500.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from mygpt.inference.engine import Engine, Request, Update
from mygpt.inference.generate import Sampling
from mygpt.serving.metrics import Metrics
from mygpt.serving.prompts import chat_prompt
from mygpt.serving.protocol import (
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    Sampled,
    TokenizeRequest,
    error_body,
)
from mygpt.serving.replies import ChatReply, CompletionReply, sse, token_text
from mygpt.serving.worker import EngineWorker, QueueFull, Ticket

STATIC = Path(__file__).parent / "static"
PUBLIC = ("/", "/health", "/favicon.ico")  # open without the API key, as the page's files
POLL_DISCONNECT_S = 0.25  # how often a non-streaming request checks that its client is there
RETRY_AFTER_S = 1  # what a 503 tells a client to wait


@dataclass(frozen=True)
class ServerConfig:
    """What the server says and allows: the model's name, the queue, the key, the body size."""

    model_name: str
    template: str = "none"  # how chat messages become a prompt (prompts.py)
    max_queue: int = 64
    api_key: str | None = None
    max_body: int = 1 << 20  # bytes


class APIError(Exception):
    """An error a client caused, answered as OpenAI's error object."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, headers=None
) -> JSONResponse:
    kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error"}
    kind_name = kind.get(status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse(error_body(message, kind_name, param, code), status, headers=headers)


class Gate:
    """ASGI middleware in front of every route: the API key, the body's size, and the count of
    API requests by status."""

    def __init__(self, app, config: ServerConfig, metrics: Metrics):
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, headers = scope["path"], dict(scope["headers"])
        key, public = self.config.api_key, path in PUBLIC or path.startswith("/static/")
        given = headers.get(b"authorization", b"").decode("latin-1")
        if key and not public and given != f"Bearer {key}":
            message = "missing or wrong API key: send 'Authorization: Bearer KEY'"
            response = error_response(401, message, code="invalid_api_key")
            return await response(scope, receive, send)
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.config.max_body:
            response = error_response(
                413, f"the body is larger than {self.config.max_body} bytes", code="body_too_large"
            )
            return await response(scope, receive, send)
        received, limit = 0, self.config.max_body

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:  # a chunked body: no length to check first
                raise HTTPException(413, f"the body is larger than {limit} bytes")
            return message

        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_status)
        finally:
            if path.startswith("/v1/") or path in ("/tokenize", "/detokenize"):
                self.metrics.requests.labels(path, str(status[0])).inc()


class OpenAIServer:
    """The routes' work: requests into engine sequences, updates into OpenAI's objects."""

    def __init__(self, engine: Engine, config: ServerConfig, metrics: Metrics):
        self.engine, self.config, self.metrics = engine, config, metrics
        self.tokenizer = engine.tokenizer
        self.worker = EngineWorker(engine, config.max_queue, metrics)
        self.context = engine.context_length

    # -- requests into sequences ---------------------------------------------------------

    def sampling(self, body: Sampled, max_tokens: int, stops: tuple[str, ...]) -> Sampling:
        top_k = body.top_k if body.top_k is not None and body.top_k > 0 else None
        return Sampling(
            max_new_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_k=top_k,
            top_p=None if body.top_p in (None, 1.0) else body.top_p,
            repetition_penalty=body.repetition_penalty or 1.0,
            presence_penalty=body.presence_penalty or 0.0,
            frequency_penalty=body.frequency_penalty or 0.0,
            eos_id=self.tokenizer.eot_token,
            stop=stops,
        )

    def encode(self, text: str) -> list[int]:
        # An empty prompt starts from <|endoftext|>, as GPT-2's unconditional samples do.
        return self.tokenizer.encode(text, disallowed_special=()) or [self.tokenizer.eot_token]

    def check_room(self, n_prompt: int, max_tokens: int, where: str) -> None:
        if n_prompt + max_tokens > self.context:
            raise APIError(
                400,
                f"This model's maximum context length is {self.context} tokens. However, you "
                f"requested {n_prompt + max_tokens} tokens ({n_prompt} in the {where}, "
                f"{max_tokens} in the completion). Please reduce the {where} or max_tokens.",
                "max_tokens",
                "context_length_exceeded",
            )

    def prompts(self, body: CompletionRequest) -> list[tuple[str, list[int]]]:
        """Each prompt of a completion request as (text, token ids)."""
        prompt = body.prompt
        if isinstance(prompt, str):
            return [(prompt, self.encode(prompt))]
        if not prompt:
            raise APIError(400, "prompt must not be an empty list", "prompt")
        if isinstance(prompt[0], int):
            prompt = [prompt]
        if isinstance(prompt[0], str):
            return [(text, self.encode(text)) for text in prompt]
        out = []
        for ids in prompt:
            if not ids or not all(0 <= i < self.tokenizer.n_vocab for i in ids):
                raise APIError(
                    400,
                    f"prompt token ids must be 0 to {self.tokenizer.n_vocab - 1}, and at least one",
                    "prompt",
                )
            out.append((self.tokenizer.decode(ids), list(ids)))
        return out

    def submit(self, requests: list[Request], queue: asyncio.Queue) -> list[Ticket]:
        for request in requests:
            try:
                self.engine.check(request)
            except ValueError as e:
                raise APIError(400, str(e), "prompt") from None
        try:
            return self.worker.submit(requests, queue)
        except QueueFull:
            raise APIError(
                503, "the server is busy: its queue is full; retry later", code="queue_full"
            ) from None

    # -- the endpoints ---------------------------------------------------------------------

    async def completions(self, body: CompletionRequest, http: HTTPRequest) -> Response:
        if body.suffix:
            raise APIError(400, "suffix is not supported", "suffix")
        n = body.n or 1
        if body.best_of is not None and body.best_of != n:
            raise APIError(
                400, "best_of must equal n: every sequence sampled is returned", "best_of"
            )
        max_tokens = 16 if body.max_tokens is None else body.max_tokens
        prompts = self.prompts(body)
        for _, ids in prompts:
            self.check_room(len(ids), max_tokens, "prompt")
        sampling = self.sampling(body, max_tokens, body.stops())
        echo_scores = body.echo and body.logprobs is not None
        requests = [
            Request(
                tuple(ids),
                sampling,
                None if body.seed is None else body.seed + choice,
                body.logprobs,
                body.logprobs if echo_scores else None,
            )
            for _, ids in prompts
            for choice in range(n)
        ]
        queue: asyncio.Queue = asyncio.Queue()
        tickets = self.submit(requests, queue)
        self.metrics.prompt_tokens.inc(sum(len(ids) for _, ids in prompts))
        reply = CompletionReply(self, body, prompts, n)
        if body.stream:
            return sse(reply.stream(self.events(tickets, queue, http, stream=True)))
        async for ticket, update in self.events(tickets, queue, http, stream=False):
            reply.add(ticket, update)
        return JSONResponse(reply.whole())

    async def chat(self, body: ChatRequest, http: HTTPRequest) -> Response:
        messages = [(m.role, m.text()) for m in body.messages]
        text, stops = chat_prompt(messages, self.config.template)
        ids = self.encode(text)
        max_tokens = body.max_completion_tokens or body.max_tokens or self.context - len(ids)
        self.check_room(len(ids), max(max_tokens, 1), "messages")
        n_top = (body.top_logprobs or 0) if body.logprobs else None
        sampling = self.sampling(body, max_tokens, (*body.stops(), *stops))
        n = body.n or 1
        requests = [
            Request(tuple(ids), sampling, None if body.seed is None else body.seed + c, n_top)
            for c in range(n)
        ]
        queue: asyncio.Queue = asyncio.Queue()
        tickets = self.submit(requests, queue)
        self.metrics.prompt_tokens.inc(len(ids))
        reply = ChatReply(self, body, len(ids), n)
        if body.stream:
            return sse(reply.stream(self.events(tickets, queue, http, stream=True)))
        async for ticket, update in self.events(tickets, queue, http, stream=False):
            reply.add(ticket, update)
        return JSONResponse(reply.whole())

    async def events(
        self, tickets: list[Ticket], queue: asyncio.Queue, http: HTTPRequest, stream: bool
    ) -> AsyncIterator[tuple[Ticket, Update]]:
        """Updates of `tickets` as the engine makes them, until each sequence has finished.
        If the client leaves (a stream cancelled, or a wait that finds it gone), its
        sequences are cancelled and free their slots at the next step."""
        open_tickets = set(tickets)
        checked = time.monotonic()
        try:
            while open_tickets:
                if stream:  # a stream learns that its client left when a write fails
                    ticket, update = await queue.get()
                else:
                    try:
                        ticket, update = await asyncio.wait_for(queue.get(), POLL_DISCONNECT_S)
                    except TimeoutError:
                        ticket = update = None  # a moment to see whether the client is there
                    if time.monotonic() - checked > POLL_DISCONNECT_S:
                        checked = time.monotonic()
                        if await http.is_disconnected():
                            return
                if update is None:
                    if ticket is not None:  # the engine's thread failed: a bug, in its log
                        raise RuntimeError("the engine failed; the server's log says why")
                    continue
                yield ticket, update
                if update.finish_reason is not None:
                    open_tickets.discard(ticket)
        finally:
            self.worker.cancel([t for t in tickets if t in open_tickets])

    def tokenize(self, body: TokenizeRequest) -> dict:
        allowed = "all" if body.add_special else set()
        ids = self.tokenizer.encode(body.content, allowed_special=allowed, disallowed_special=())
        if not body.with_pieces:
            return {"tokens": ids}
        return {"tokens": [{"id": i, "piece": token_text(self.tokenizer, i)} for i in ids]}

    def detokenize(self, body: DetokenizeRequest) -> dict:
        bad = [i for i in body.tokens if i >= self.tokenizer.n_vocab]
        if bad:
            raise APIError(400, f"token id {bad[0]} is not in the vocabulary", "tokens")
        return {"content": self.tokenizer.decode(body.tokens)}

    def models(self) -> dict:
        model = {"id": self.config.model_name, "object": "model", "created": 0, "owned_by": "mygpt"}
        return {"object": "list", "data": [model | {"max_model_len": self.context}]}


def validation_error(errors: list[dict]) -> JSONResponse:
    """pydantic's errors as OpenAI's: the field's path as `param`, and what is wrong with it.

    A field of several types (`stop`: text or a list) fails once per type; the error shown
    is one about its value (a list too long), not that it is not the first type."""
    first = min(errors, key=lambda e: e.get("type", "").endswith("_type"))
    if first.get("type") == "json_invalid":
        return error_response(400, f"the body is not valid JSON: {first.get('msg')}")
    where = [str(part) for part in first.get("loc", ()) if part != "body"]
    where = [part for part in where if not _is_type_tag(part)]
    param = ".".join(where) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return error_response(400, message, param)


def _is_type_tag(part: str) -> bool:
    """Whether a part of pydantic's error location names a type of a union, not a field."""
    return (
        "[" in part or "-" in part or part[:1].isupper() or part in ("str", "int", "float", "bool")
    )


def create_app(
    engine: Engine, config: ServerConfig, on_ready: Callable[[], None] | None = None
) -> FastAPI:
    """The ASGI app serving `engine` (its thread starts and stops with the app)."""
    metrics = Metrics()
    server = OpenAIServer(engine, config, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.worker.start()
        if on_ready:
            on_ready()
        yield
        server.worker.stop()  # the sequences in flight finish first

    app = FastAPI(title="MyGPT", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server
    app.add_middleware(Gate, config=config, metrics=metrics)

    @app.exception_handler(APIError)
    async def api_error(request, e: APIError):
        headers = {"Retry-After": str(RETRY_AFTER_S)} if e.status == 503 else None
        return error_response(e.status, e.message, e.param, e.code, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        return validation_error(e.errors())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        if e.status_code == 404:
            return error_response(404, f"no such path: {request.url.path}", code="not_found")
        return error_response(e.status_code, str(e.detail))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: HTTPRequest) -> Response:
        return await server.completions(body, request)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: HTTPRequest) -> Response:
        return await server.chat(body, request)

    @app.get("/v1/models")
    async def models() -> dict:
        return server.models()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict:
        return server.tokenize(body)

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict:
        return server.detokenize(body)

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app

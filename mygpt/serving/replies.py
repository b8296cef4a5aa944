"""OpenAI's response objects as a request's sequences produce them: a completion's or a
chat's choices, whole or as streamed chunks (server-sent events)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import tiktoken
from fastapi.responses import StreamingResponse

from mygpt.inference.engine import Update
from mygpt.serving.protocol import ChatRequest, CompletionRequest, new_id, now, usage
from mygpt.serving.worker import Ticket

if TYPE_CHECKING:
    from mygpt.serving.app import OpenAIServer


def token_text(tokenizer: tiktoken.Encoding, token: int) -> str:
    """A token as text; one that ends inside a character shows its bytes, as OpenAI does."""
    raw = tokenizer.decode_single_token_bytes(token)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


class CompletionReply:
    """The choices of a completion request, as they grow, in OpenAI's `text_completion`."""

    def __init__(self, server: OpenAIServer, body: CompletionRequest, prompts, n: int):
        self.server, self.body, self.prompts, self.n = server, body, prompts, n
        self.id, self.created, self.model = new_id("cmpl"), now(), server.config.model_name
        count = len(prompts) * n
        self.text = [""] * count
        self.started = [False] * count
        self.offset = [0] * count  # where the next token's text starts, for text_offset
        self.tokens = [0] * count
        self.logprobs: list[dict | None] = [self._no_logprobs() for _ in range(count)]
        self.finish: list[str | None] = [None] * count

    def _no_logprobs(self) -> dict | None:
        if self.body.logprobs is None:
            return None
        return {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}

    def _add_logprob(self, lp: dict, i: int, token: int, logprob, top) -> None:
        tok = self.server.tokenizer
        text = token_text(tok, token)
        lp["tokens"].append(text)
        lp["token_logprobs"].append(logprob)
        lp["top_logprobs"].append(
            None if top is None else {token_text(tok, t): v for t, v in top.items()}
        )
        lp["text_offset"].append(self.offset[i])
        self.offset[i] += len(text)

    def add(self, ticket: Ticket, update: Update) -> tuple[str, dict | None]:
        """Take in an update; the text and log-probabilities it adds to its choice (with
        echo, the first also brings the prompt's)."""
        i, lp, added = ticket.index, self._no_logprobs(), ""
        if not self.started[i]:
            self.started[i] = True
            if self.body.echo:
                added = self.prompts[i // self.n][0]
                if lp is not None:  # the prompt's tokens: the first has no log-probability
                    sequence = ticket.sequence
                    scores = [(None, None), *sequence.prompt_logprobs]
                    for token, (logprob, top) in zip(sequence.prompt, scores, strict=True):
                        self._add_logprob(lp, i, token, logprob, top)
                self.offset[i] = len(added)
        if update.token is not None:
            self.tokens[i] += 1
            if lp is not None:
                self._add_logprob(lp, i, update.token, update.logprob, update.top_logprobs)
        added += update.text
        self.text[i] += added
        if lp is not None:
            for key, values in lp.items():
                self.logprobs[i][key] += values
        if update.finish_reason is not None:
            self.finish[i] = update.finish_reason
        return added, lp

    def choice(self, i: int, text: str, logprobs, finish) -> dict:
        return {"text": text, "index": i, "logprobs": logprobs, "finish_reason": finish}

    def head(self) -> dict:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
        }

    def usage(self) -> dict:
        return usage(sum(len(ids) for _, ids in self.prompts), sum(self.tokens))

    def whole(self) -> dict:
        choices = [
            self.choice(i, self.text[i], self.logprobs[i], self.finish[i] or "length")
            for i in range(len(self.text))
        ]
        return self.head() | {"choices": choices, "usage": self.usage()}

    async def stream(self, events: AsyncIterator[tuple[Ticket, Update]]) -> AsyncIterator[dict]:
        async for ticket, update in events:
            text, lp = self.add(ticket, update)
            choice = self.choice(ticket.index, text, lp, update.finish_reason)
            yield self.head() | {"choices": [choice]}
        if self.body.stream_options and self.body.stream_options.include_usage:
            yield self.head() | {"choices": [], "usage": self.usage()}


class ChatReply:
    """The choices of a chat request, in OpenAI's `chat.completion` and its chunks."""

    def __init__(self, server: OpenAIServer, body: ChatRequest, n_prompt: int, n: int):
        self.server, self.body, self.n_prompt = server, body, n_prompt
        self.id, self.created, self.model = new_id("chatcmpl"), now(), server.config.model_name
        self.text = [""] * n
        self.n_tokens = [0] * n
        self.logprobs: list[list[dict] | None] = [[] if body.logprobs else None for _ in range(n)]
        self.finish: list[str | None] = [None] * n

    def _entry(self, token: int, logprob: float) -> dict:
        tok = self.server.tokenizer
        return {
            "token": token_text(tok, token),
            "logprob": logprob,
            "bytes": list(tok.decode_single_token_bytes(token)),
        }

    def add(self, ticket: Ticket, update: Update) -> list[dict] | None:
        i = ticket.index
        entries = None
        if self.body.logprobs and update.token is not None:
            entry = self._entry(update.token, update.logprob)
            top = update.top_logprobs or {}
            entry["top_logprobs"] = [self._entry(t, v) for t, v in top.items()]
            entries = [entry]
            self.logprobs[i] += entries
        self.n_tokens[i] += update.token is not None
        self.text[i] += update.text
        if update.finish_reason is not None:
            self.finish[i] = update.finish_reason
        return entries

    def head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def usage(self) -> dict:
        return usage(self.n_prompt, sum(self.n_tokens))

    def whole(self) -> dict:
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": None
                if self.logprobs[i] is None
                else {"content": self.logprobs[i], "refusal": None},
                "finish_reason": self.finish[i] or "length",
            }
            for i, text in enumerate(self.text)
        ]
        return self.head("chat.completion") | {"choices": choices, "usage": self.usage()}

    def chunk(self, i: int, delta: dict, finish=None, logprobs=None) -> dict:
        lp = None if logprobs is None else {"content": logprobs, "refusal": None}
        choice = {"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish}
        return self.head("chat.completion.chunk") | {"choices": [choice]}

    async def stream(self, events: AsyncIterator[tuple[Ticket, Update]]) -> AsyncIterator[dict]:
        for i in range(len(self.text)):
            yield self.chunk(i, {"role": "assistant", "content": ""})
        async for ticket, update in events:
            entries = self.add(ticket, update)
            if update.text or entries:
                yield self.chunk(ticket.index, {"content": update.text}, logprobs=entries)
            if update.finish_reason is not None:
                yield self.chunk(ticket.index, {}, update.finish_reason)
        if self.body.stream_options and self.body.stream_options.include_usage:
            yield self.head("chat.completion.chunk") | {"choices": [], "usage": self.usage()}


def sse(chunks: AsyncIterator[dict]) -> StreamingResponse:
    """Server-sent events: each chunk a `data:` line of JSON, then `data: [DONE]`."""

    async def lines() -> AsyncIterator[str]:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(lines(), media_type="text/event-stream", headers=headers)

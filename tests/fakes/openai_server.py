"""A fake OpenAI-compatible HTTP server for tests: a real socket speaking the real protocol.

Tests script what each endpoint answers next (a queue per endpoint; a default reply when
it is empty) and inspect what reached the server. It serves `POST /v1/chat/completions`
(JSON, or SSE with `data: [DONE]`), `POST /v1/embeddings` and `GET /v1/models`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.live import free_port

Endpoint = Literal["chat", "embeddings"]
MODEL = "fake-model"


@dataclass(frozen=True)
class ScriptedToolCall:
    name: str
    arguments: str
    id: str = ""


@dataclass(frozen=True)
class ChatReply:
    """A successful chat completion; `drop_after` cuts a stream after that many chunks."""

    content: str | None = "ok"
    tool_calls: tuple[ScriptedToolCall, ...] = ()
    finish_reason: str = "stop"
    usage: tuple[int, int] | None = (11, 7)
    # Of the prompt tokens, how many the server says it had cached (OpenAI's
    # `usage.prompt_tokens_details.cached_tokens`).
    cached_tokens: int = 0
    delay: float = 0.0
    drop_after: int | None = None


@dataclass(frozen=True)
class EmbeddingsReply:
    vectors: tuple[tuple[float, ...], ...] | None = None  # None: hash-derived vectors
    reverse_order: bool = False
    delay: float = 0.0


@dataclass(frozen=True)
class ErrorReply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "scripted failure"
    delay: float = 0.0


@dataclass(frozen=True)
class RawReply:
    """Any body at all, for malformed replies."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"


Reply = ChatReply | EmbeddingsReply | ErrorReply | RawReply


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeOpenAI:
    """The server and its script. `base_url` ends in `/v1`, as clients expect."""

    def __init__(self, *, embedding_dimensions: int = 16) -> None:
        self.embedding_dimensions = embedding_dimensions
        self.requests: list[RecordedRequest] = []
        self._queues: dict[Endpoint, deque[Reply]] = {"chat": deque(), "embeddings": deque()}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    # Scripting -----------------------------------------------------------------------

    def script(self, endpoint: Endpoint, *replies: Reply) -> None:
        with self._lock:
            self._queues[endpoint].extend(replies)

    def reply_text(self, content: str, **options: Any) -> None:
        self.script("chat", ChatReply(content=content, **options))

    def reply_json(self, value: Any, **options: Any) -> None:
        self.script("chat", ChatReply(content=orjson.dumps(value).decode(), **options))

    def reply_tool_call(self, name: str, arguments: dict[str, Any] | str, **options: Any) -> None:
        text = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
        call = ScriptedToolCall(name=name, arguments=text)
        self.script(
            "chat",
            ChatReply(content=None, tool_calls=(call,), finish_reason="tool_calls", **options),
        )

    def reply_error(
        self,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        endpoint: Endpoint = "chat",
        times: int = 1,
    ) -> None:
        self.script(endpoint, *[ErrorReply(status=status, headers=headers or {})] * times)

    def reply_raw(self, body: bytes, *, endpoint: Endpoint = "chat", **options: Any) -> None:
        self.script(endpoint, RawReply(body=body, **options))

    def reset(self) -> None:
        with self._lock:
            for queue in self._queues.values():
                queue.clear()
            self.requests.clear()

    def requests_to(self, path_suffix: str) -> list[RecordedRequest]:
        with self._lock:
            return [request for request in self.requests if request.path.endswith(path_suffix)]

    # Serving -------------------------------------------------------------------------

    @contextmanager
    def running(self, *, timeout: float = 10.0) -> Iterator[FakeOpenAI]:
        port = free_port()
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"fake-openai:{port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.02)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        try:
            yield self
        finally:
            server.should_exit = True
            thread.join(timeout)

    # Handlers ------------------------------------------------------------------------

    async def _record(
        self, request: Request, endpoint: Endpoint | None
    ) -> tuple[Any, Reply | None]:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = raw
        with self._lock:
            self.requests.append(
                RecordedRequest(request.method, request.url.path, dict(request.headers), body)
            )
            queue = self._queues[endpoint] if endpoint else None
            reply = queue.popleft() if queue else None
        return body, reply

    async def _chat(self, request: Request) -> Response:
        body, reply = await self._record(request, "chat")
        reply = reply or ChatReply()
        if common := await _common_reply(reply):
            return common
        assert isinstance(reply, ChatReply)
        completion_id = f"chatcmpl-{next(self._ids)}"
        model = body.get("model", MODEL) if isinstance(body, dict) else MODEL
        if isinstance(body, dict) and body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                _sse(_chunks(reply, completion_id, model, include_usage), reply.drop_after),
                media_type="text/event-stream",
            )
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id or f"call_{completion_id}_{index}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for index, call in enumerate(reply.tool_calls)
            ]
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        }
        if reply.usage is not None:
            payload["usage"] = _usage(reply.usage, reply.cached_tokens)
        return JSONResponse(payload)

    async def _embeddings(self, request: Request) -> Response:
        body, reply = await self._record(request, "embeddings")
        reply = reply or EmbeddingsReply()
        if common := await _common_reply(reply):
            return common
        assert isinstance(reply, EmbeddingsReply)
        texts = body.get("input", []) if isinstance(body, dict) else []
        if isinstance(texts, str):
            texts = [texts]
        vectors = reply.vectors or tuple(self.vector_for(text) for text in texts)
        data = [
            {"object": "embedding", "index": index, "embedding": list(vector)}
            for index, vector in enumerate(vectors)
        ]
        if reply.reverse_order:
            data.reverse()
        tokens = sum(len(str(text).split()) for text in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", MODEL) if isinstance(body, dict) else MODEL,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _models(self, request: Request) -> Response:
        await self._record(request, None)
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "fake"}],
            }
        )

    def vector_for(self, text: str) -> tuple[float, ...]:
        """The deterministic, not normalised vector the default reply gives `text`."""
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
        values = np.random.default_rng(seed).normal(size=self.embedding_dimensions) * 3.0
        return tuple(float(value) for value in values)


async def _common_reply(reply: Reply) -> Response | None:
    delay = getattr(reply, "delay", 0.0)
    if delay:
        await asyncio.sleep(delay)
    if isinstance(reply, ErrorReply):
        kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            429: "rate_limit_exceeded",
        }
        error = {
            "message": reply.message,
            "type": kinds.get(reply.status, "server_error"),
            "code": None,
        }
        return JSONResponse({"error": error}, status_code=reply.status, headers=reply.headers)
    if isinstance(reply, RawReply):
        return Response(reply.body, status_code=reply.status, media_type=reply.content_type)
    return None


def _usage(usage: tuple[int, int], cached_tokens: int) -> dict[str, Any]:
    prompt, completion = usage
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def _chunks(
    reply: ChatReply, completion_id: str, model: str, include_usage: bool
) -> Iterator[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    yield chunk({"role": "assistant", "content": ""})
    text = reply.content or ""
    for start in range(0, len(text), 4):
        yield chunk({"content": text[start : start + 4]})
    for index, call in enumerate(reply.tool_calls):
        head = {
            "index": index,
            "id": call.id or f"call_{completion_id}_{index}",
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield chunk({"tool_calls": [head]})
        for start in range(0, len(call.arguments), 5):
            piece = call.arguments[start : start + 5]
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, reply.finish_reason)
    if include_usage and reply.usage is not None:
        final = chunk({})
        final["choices"] = []
        final["usage"] = _usage(reply.usage, reply.cached_tokens)
        yield final


class _DroppedConnection(Exception):
    """Raised inside the response body so the server aborts the connection mid-stream."""


async def _sse(chunks: Iterator[dict[str, Any]], drop_after: int | None) -> AsyncIterator[bytes]:
    for count, chunk in enumerate(chunks):
        if drop_after is not None and count >= drop_after:
            raise _DroppedConnection
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        await asyncio.sleep(0)
    yield b"data: [DONE]\n\n"

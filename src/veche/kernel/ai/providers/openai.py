"""Chat over any OpenAI-compatible API (OpenAI, vLLM, Ollama, llama.cpp server, ...).

The official SDK does the retrying: exponential backoff with jitter on 408/409/429/5xx and
connection errors, honouring `Retry-After`/`retry-after-ms`. Around every call sits a
circuit breaker, so a backend that keeps failing is not hammered: while it is open,
calls fail fast with `ProviderUnavailable` and no request is sent. SDK errors leave as
the gateway's problems; their detail never holds the key, the URL or the provider's body.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast, get_args
from urllib.parse import urlsplit

import openai
import structlog
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from veche.kernel.ai.breaker import CircuitBreaker
from veche.kernel.ai.errors import AIError, ProviderRejected, ProviderTimeout, ProviderUnavailable
from veche.kernel.ai.providers.base import ProviderHealth
from veche.kernel.ai.types import (
    ChatRequest,
    Completion,
    FinishReason,
    Message,
    StreamEvent,
    TextDelta,
    TokenUsage,
    ToolCall,
)
from veche.settings import AISettings

log = structlog.get_logger(__name__)

T = TypeVar("T")

OPENAI_BASE_URL = "https://api.openai.com/v1"
# Local servers (Ollama, llama.cpp, vLLM) accept any key, but the SDK insists on one.
PLACEHOLDER_API_KEY = "not-needed"
_FINISH_REASONS: frozenset[str] = frozenset(get_args(FinishReason))
_REJECTION_KINDS = {
    400: "the request is invalid",
    401: "authentication failed (check the API key)",
    403: "permission denied",
    404: "the model or endpoint does not exist",
    413: "the request is too large",
    422: "the request could not be processed",
}


def is_openai_host(base_url: str | None) -> bool:
    return base_url is None or (urlsplit(base_url).hostname or "").endswith("openai.com")


def build_client(
    *, base_url: str | None, api_key: str | None, max_retries: int, timeout_seconds: float
) -> openai.AsyncOpenAI:
    """An SDK client that never falls back to `OPENAI_*` environment variables."""
    return openai.AsyncOpenAI(
        base_url=base_url or OPENAI_BASE_URL,
        api_key=api_key or PLACEHOLDER_API_KEY,
        max_retries=max_retries,
        timeout=timeout_seconds,
    )


def connection_problems(
    *, env_prefix: str, base_url: str | None, has_api_key: bool, model: str | None = None
) -> list[str]:
    """What is missing for an OpenAI-compatible backend, found without calling it.

    `model` is checked when given as "" (servers other than OpenAI have no default).
    """
    problems: list[str] = []
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            problems.append(f"{env_prefix}_BASE_URL is not an http(s) URL")
            return problems
    if is_openai_host(base_url) and not has_api_key:
        problems.append(f"{env_prefix}_API_KEY is missing (the OpenAI API needs a key)")
    if model == "" and not is_openai_host(base_url):
        problems.append(
            f"{env_prefix}_MODEL is missing (servers other than OpenAI have no default)"
        )
    return problems


def retry_after_seconds(headers: Any) -> int | None:
    """The provider's `retry-after-ms`/`Retry-After` in whole seconds, when it sent one."""
    milliseconds = headers.get("retry-after-ms")
    value = headers.get("retry-after")
    try:
        if milliseconds is not None:
            return max(0, math.ceil(float(milliseconds) / 1000))
        if value is not None:
            return max(0, math.ceil(float(value)))
    except ValueError:
        pass
    if value is None:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0, math.ceil(moment - time.time()))


def translate_error(exc: openai.OpenAIError) -> tuple[AIError, bool]:
    """The problem an SDK error becomes, and whether it is the provider's fault."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout("The AI provider did not answer in time"), True
    if isinstance(exc, openai.APIConnectionError):
        return ProviderUnavailable("The AI provider could not be reached"), True
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in {408, 409, 429} or status >= 500:
            seconds = retry_after_seconds(exc.response.headers)
            headers = {"Retry-After": str(seconds)} if seconds is not None else None
            reason = "is rate limiting" if status == 429 else f"answered {status}"
            problem = ProviderUnavailable(
                f"The AI provider {reason}; retries ran out", headers=headers
            )
            return problem, True
        kind = _REJECTION_KINDS.get(status, "the request was refused")
        return ProviderRejected(f"The AI provider rejected the request ({status}: {kind})"), False
    return AIError("The AI provider sent a reply that could not be read"), True


def log_failure(provider: str, model: str, exc: BaseException) -> None:
    """Log why a call failed: status, error type and code, never a key, URL or body."""
    details: dict[str, Any] = {"provider": provider, "model": model, "error": type(exc).__name__}
    if isinstance(exc, openai.APIStatusError):
        details["status"] = exc.status_code
        details["provider_request_id"] = exc.request_id
    if isinstance(exc, openai.APIError) and isinstance(exc.code, str):
        details["provider_code"] = exc.code
    log.warning("ai.provider_call_failed", **details)


async def guarded(
    breaker: CircuitBreaker, provider: str, model: str, call: Callable[[], Awaitable[T]]
) -> T:
    """Run one provider call behind the breaker, translating its errors.

    `call` parses the reply too, raising `AIError` when it cannot: a garbled reply is the
    provider's failure.
    """
    breaker.before_call()
    try:
        result = await call()
    except openai.OpenAIError as exc:
        problem, provider_side = translate_error(exc)
        breaker.record_failure() if provider_side else breaker.record_success()
        log_failure(provider, model, exc)
        raise problem from exc
    except AIError as exc:
        breaker.record_failure()
        log_failure(provider, model, exc.__cause__ or exc)
        raise
    except json.JSONDecodeError as exc:
        # The SDK lets a body that is not JSON at all through as the decoder's error.
        breaker.record_failure()
        log_failure(provider, model, exc)
        raise AIError("The AI provider sent a reply that could not be read") from exc
    except BaseException:
        breaker.record_abandoned()
        raise
    breaker.record_success()
    return result


def breaker_from(settings: AISettings) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=settings.circuit_failure_threshold,
        reset_seconds=settings.circuit_reset_seconds,
    )


def breaker_health(provider: str, breaker: CircuitBreaker) -> ProviderHealth:
    state = breaker.state
    if state == "open":
        return ProviderHealth(
            provider, "down", f"circuit open, retry in {breaker.retry_after():.0f}s"
        )
    if state == "half_open":
        return ProviderHealth(provider, "degraded", "circuit half-open, trying one call")
    if breaker.consecutive_failures:
        return ProviderHealth(
            provider, "degraded", f"{breaker.consecutive_failures} recent failures"
        )
    return ProviderHealth(provider, "ok")


class OpenAIEndpoint:
    """What every OpenAI-compatible provider holds: the endpoint, the SDK client (with its
    retries and timeout) and a circuit breaker. `settings` gives retries, timeout and
    breaker; the keywords override it."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        settings: AISettings | None = None,
        max_retries: int | None = None,
        timeout_seconds: float | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        settings = settings or AISettings()
        self.base_url = base_url
        self._has_key = bool(api_key)
        self._breaker = breaker or breaker_from(settings)
        self._client = build_client(
            base_url=base_url,
            api_key=api_key,
            max_retries=settings.max_retries if max_retries is None else max_retries,
            timeout_seconds=timeout_seconds or settings.timeout_seconds,
        )

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    async def aclose(self) -> None:
        await self._client.close()


class OpenAIChatProvider(OpenAIEndpoint):
    """Chat completions over an OpenAI-compatible HTTP API. Each request names its model,
    so the profile settings own the model check."""

    name = "openai"

    def problems(self) -> list[str]:
        return connection_problems(
            env_prefix="VECHE_LLM", base_url=self.base_url, has_api_key=self._has_key
        )

    # The body goes through the client's `post` (its documented way to send a request
    # as built): `chat.completions.create` first walks every message against its
    # TypedDicts (about 0.2 ms per message here, 3 ms for a run with a full history),
    # which changes nothing in a body made of plain JSON values like ours. Retries,
    # authentication, errors and the reply's parsing are the client's as before.

    async def complete(self, request: ChatRequest) -> Completion:
        async def call() -> Completion:
            reply = await self._client.post(
                "/chat/completions",
                body=_request_arguments(request),
                cast_to=ChatCompletion,
                options={"timeout": request.timeout_seconds},
            )
            return _parse_completion(reply, request.model)

        return await guarded(self._breaker, self.name, request.model, call)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        async def open_stream() -> openai.AsyncStream[Any]:
            return await self._client.post(
                "/chat/completions",
                body={
                    **_request_arguments(request),
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
                cast_to=ChatCompletion,
                options={"timeout": request.timeout_seconds},
                stream=True,
                stream_cls=openai.AsyncStream[ChatCompletionChunk],
            )

        # Until the first chunk a failure is like complete()'s; the breaker admitted this
        # call, so it also owes the breaker one verdict when the stream ends.
        chunks = await _open_guarded(self._breaker, self.name, request.model, open_stream)
        reply = _StreamedReply()
        verdict_given = False
        try:
            iterator = chunks.__aiter__()
            while True:
                try:
                    chunk = await anext(iterator)
                    text = reply.absorb(chunk)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    verdict_given = True
                    self._breaker.record_failure()
                    log_failure(self.name, request.model, exc)
                    raise ProviderUnavailable("The AI provider's stream broke off") from exc
                if text:
                    yield TextDelta(text)
            verdict_given = True
            self._breaker.record_success()
        finally:
            if not verdict_given:
                self._breaker.record_abandoned()
            await chunks.close()
        yield reply.completion(request.model)

    def health(self) -> ProviderHealth:
        return breaker_health(self.name, self._breaker)


async def _open_guarded(
    breaker: CircuitBreaker, provider: str, model: str, call: Callable[[], Awaitable[T]]
) -> T:
    """Like `guarded`, but a success only admits the call: its verdict comes later."""
    breaker.before_call()
    try:
        return await call()
    except openai.OpenAIError as exc:
        problem, provider_side = translate_error(exc)
        breaker.record_failure() if provider_side else breaker.record_success()
        log_failure(provider, model, exc)
        raise problem from exc
    except BaseException:
        breaker.record_abandoned()
        raise


def _request_arguments(request: ChatRequest) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "model": request.model,
        "messages": [_wire_message(message) for message in request.messages],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    if request.tools:
        arguments["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in request.tools
        ]
        if request.tool_choice is not None:
            arguments["tool_choice"] = _wire_tool_choice(request.tool_choice)
    if request.response_schema is not None:
        arguments["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": request.schema_name,
                "schema": request.response_schema,
                "strict": False,
            },
        }
    return arguments


def _wire_tool_choice(choice: str) -> str | dict[str, Any]:
    if choice in {"auto", "none", "required"}:
        return choice
    return {"type": "function", "function": {"name": choice}}


def _wire_message(message: Message) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    if message.role == "tool":
        wire["tool_call_id"] = message.tool_call_id
    elif message.name:
        wire["name"] = message.name
    return wire


def _finish_reason(value: object, has_tool_calls: bool) -> FinishReason:
    if value == "function_call" or (has_tool_calls and value in {None, "stop"}):
        return "tool_calls"
    if isinstance(value, str) and value in _FINISH_REASONS:
        return cast("FinishReason", value)
    return "stop"


def _usage(usage: Any) -> TokenUsage:
    if usage is None:
        return TokenUsage()
    return TokenUsage(
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        cached_tokens=int(
            getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", 0) or 0
        ),
    )


def _parse_completion(reply: Any, model: str) -> Completion:
    # The SDK builds its models without validating, so a garbled reply surfaces here.
    try:
        choice = reply.choices[0]
        message = choice.message
        tool_calls = tuple(
            ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments or "{}")
            for call in (message.tool_calls or ())
            if getattr(call, "type", "function") == "function"
        )
        return Completion(
            content=message.content,
            model=model,
            finish_reason=_finish_reason(choice.finish_reason, bool(tool_calls)),
            tool_calls=tool_calls,
            usage=_usage(getattr(reply, "usage", None)),
        )
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise AIError("The AI provider sent a reply that is not a chat completion") from exc


@dataclass
class _PartialToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _StreamedReply:
    """A streamed reply put back together: text pieces, tool calls by index, usage."""

    text: list[str] = field(default_factory=list)
    tool_calls: dict[int, _PartialToolCall] = field(default_factory=dict)
    finish_reason: object = None
    usage: TokenUsage = field(default_factory=TokenUsage)

    def absorb(self, chunk: Any) -> str:
        """Take one chunk in; returns its new text."""
        if getattr(chunk, "usage", None) is not None:
            self.usage = _usage(chunk.usage)
        new_text = ""
        for choice in chunk.choices or ():
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.content:
                new_text += delta.content
            for part in delta.tool_calls or ():
                partial = self.tool_calls.setdefault(part.index, _PartialToolCall())
                partial.id = part.id or partial.id
                if part.function is not None:
                    partial.name = part.function.name or partial.name
                    if part.function.arguments:
                        partial.arguments.append(part.function.arguments)
            if choice.finish_reason is not None:
                self.finish_reason = choice.finish_reason
        if new_text:
            self.text.append(new_text)
        return new_text

    def completion(self, model: str) -> Completion:
        tool_calls = tuple(
            ToolCall(id=partial.id, name=partial.name, arguments="".join(partial.arguments) or "{}")
            for _, partial in sorted(self.tool_calls.items())
        )
        return Completion(
            content="".join(self.text) if self.text or not tool_calls else None,
            model=model,
            finish_reason=_finish_reason(self.finish_reason, bool(tool_calls)),
            tool_calls=tool_calls,
            usage=self.usage,
        )

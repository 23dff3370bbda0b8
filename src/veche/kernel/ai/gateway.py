"""The LLM gateway: every app's model calls go through here.

It resolves the purpose's profile, refuses users over their daily budget, calls the
provider, validates structured output (with one repair round), and records usage for
every call, successful or not.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

import structlog
from pydantic import BaseModel, ValidationError

from veche.kernel.ai.errors import InvalidModelOutput
from veche.kernel.ai.profiles import (
    DEFAULT_PURPOSE,
    ResolvedProfile,
    configured_purposes,
    profile_problems,
    resolve,
)
from veche.kernel.ai.prompts import RenderedPrompt
from veche.kernel.ai.providers.base import ChatProvider, ProviderHealth
from veche.kernel.ai.types import (
    ChatRequest,
    Completion,
    Message,
    StreamEvent,
    TokenUsage,
    Tool,
    ToolChoice,
)
from veche.kernel.ai.usage import CallRecord, UsageLedger
from veche.kernel.errors import ProblemError
from veche.settings import Settings

log = structlog.get_logger(__name__)

OutputT = TypeVar("OutputT", bound=BaseModel)
ProviderFactory = Callable[[ResolvedProfile], ChatProvider]
_APP = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@functools.lru_cache(maxsize=256)
def _output_schema(output: type[BaseModel]) -> dict[str, object]:
    """The JSON schema of a structured call's output model, rendered once per model
    (pydantic renders it anew on every call). Shared between calls: nothing changes it."""
    return output.model_json_schema()


_REPAIR = (
    "Your previous reply did not match the required JSON schema ({errors}). "
    "Reply again with only a JSON object that matches the schema."
)


@dataclass(frozen=True, slots=True)
class ProfileStatus:
    """A purpose's profile as `/api/v1/ai/models` shows it."""

    purpose: str
    provider: str
    model: str
    temperature: float
    max_tokens: int
    timeout_seconds: float
    health: ProviderHealth


class LLMGateway:
    """Chat, streaming and structured output with profiles, budgets and accounting."""

    def __init__(self, settings: Settings, ledger: UsageLedger, factory: ProviderFactory) -> None:
        self._settings = settings
        self._ledger = ledger
        self._factory = factory
        self._providers: dict[tuple[str, str | None, str | None], ChatProvider] = {}

    @property
    def ledger(self) -> UsageLedger:
        return self._ledger

    def profile(self, purpose: str = DEFAULT_PURPOSE) -> ResolvedProfile:
        return resolve(self._settings, purpose)

    def provider(self, profile: ResolvedProfile) -> ChatProvider:
        """One provider client per endpoint and key, shared by the profiles that use it."""
        key = profile.connection
        provider = self._providers.get(key)
        if provider is None:
            provider = self._providers[key] = self._factory(profile)
        return provider

    def problems(self) -> list[str]:
        problems = profile_problems(self._settings)
        if problems:
            return problems
        seen: set[int] = set()
        for purpose in configured_purposes(self._settings):
            provider = self.provider(self.profile(purpose))
            if id(provider) not in seen:
                seen.add(id(provider))
                problems.extend(provider.problems())
        return problems

    def statuses(self) -> list[ProfileStatus]:
        statuses = []
        for purpose in configured_purposes(self._settings):
            profile = self.profile(purpose)
            statuses.append(
                ProfileStatus(
                    purpose=purpose,
                    provider=profile.provider,
                    model=profile.model,
                    temperature=profile.temperature,
                    max_tokens=profile.max_tokens,
                    timeout_seconds=profile.timeout_seconds,
                    health=self.provider(profile).health(),
                )
            )
        return statuses

    async def aclose(self) -> None:
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            await provider.aclose()

    def _request(
        self,
        profile: ResolvedProfile,
        messages: Sequence[Message],
        *,
        tools: Sequence[Tool] = (),
        tool_choice: ToolChoice | None = None,
        response_schema: dict[str, object] | None = None,
        schema_name: str = "result",
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatRequest:
        if not messages:
            raise ValueError("a chat needs at least one message")
        return ChatRequest(
            messages=tuple(messages),
            model=profile.model,
            temperature=profile.temperature if temperature is None else temperature,
            max_tokens=min(max_tokens or profile.max_tokens, profile.max_tokens),
            timeout_seconds=profile.timeout_seconds,
            tools=tuple(tools),
            tool_choice=tool_choice,
            response_schema=response_schema,
            schema_name=schema_name,
        )

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        app: str,
        purpose: str = DEFAULT_PURPOSE,
        user_id: UUID | None = None,
        tools: Sequence[Tool] = (),
        tool_choice: ToolChoice | None = None,
        prompt: RenderedPrompt | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Completion:
        """One reply: text, or the tool calls the model wants made."""
        profile, request = await self._admit(
            messages, app, purpose, user_id, tools, tool_choice, max_tokens, temperature
        )
        return await self._complete(profile, request, app, user_id, "chat", prompt)

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        app: str,
        purpose: str = DEFAULT_PURPOSE,
        user_id: UUID | None = None,
        tools: Sequence[Tool] = (),
        tool_choice: ToolChoice | None = None,
        prompt: RenderedPrompt | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Text deltas as the model writes, then one `Completion` with the whole reply.

        The budget is checked before the first event; a stream abandoned by its reader is
        recorded as `cancelled` with the text it had produced counted as completion.
        """
        profile, request = await self._admit(
            messages, app, purpose, user_id, tools, tool_choice, max_tokens, temperature
        )
        return self._stream(profile, request, app, user_id, prompt)

    async def _stream(
        self,
        profile: ResolvedProfile,
        request: ChatRequest,
        app: str,
        user_id: UUID | None,
        prompt: RenderedPrompt | None,
    ) -> AsyncIterator[StreamEvent]:
        provider = self.provider(profile)
        started = time.perf_counter()
        outcome, usage, pieces = "cancelled", TokenUsage(), 0
        events = provider.stream(request)
        try:
            async for event in events:
                if isinstance(event, Completion):
                    outcome, usage = "ok", event.usage
                else:
                    pieces += 1
                yield event
        except ProblemError as exc:
            outcome = exc.code
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            # Closed now, not whenever it is collected: an abandoned stream still holds the
            # provider's connection and its circuit-breaker slot.
            close = getattr(events, "aclose", None)
            try:
                if close is not None:
                    await close()
            finally:
                if outcome != "ok" and not usage.total_tokens:
                    usage = TokenUsage(completion_tokens=pieces)
                self._ledger.record_soon(
                    self._record(profile, app, user_id, "stream", prompt, usage, started, outcome)
                )

    async def structured(
        self,
        messages: Sequence[Message],
        output: type[OutputT],
        *,
        app: str,
        purpose: str = DEFAULT_PURPOSE,
        user_id: UUID | None = None,
        prompt: RenderedPrompt | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> OutputT:
        """A validated instance of `output`; one repair round, then `ai_invalid_output`."""
        profile = self._prepare(app, purpose)
        await self._ledger.ensure_budget(user_id, app)
        schema = _output_schema(output)
        conversation = list(messages)
        error: ValidationError | None = None
        parsed: list[OutputT] = []

        def check(completion: Completion) -> None:
            parsed.append(output.model_validate_json(completion.content or ""))

        for attempt in range(2):
            request = self._request(
                profile,
                conversation,
                response_schema=schema,
                schema_name=output.__name__,
                max_tokens=max_tokens,
                temperature=temperature,
            )
            try:
                await self._complete(
                    profile, request, app, user_id, "structured", prompt, check=check
                )
                return parsed[0]
            except _InvalidAttempt as invalid:
                error, completion = invalid.error, invalid.completion
                log.info(
                    "ai.structured.invalid",
                    app=app,
                    purpose=profile.purpose,
                    attempt=attempt + 1,
                    errors=error.error_count(),
                )
                conversation = [
                    *messages,
                    Message.assistant(completion.content or ""),
                    Message.user(_REPAIR.format(errors=_summarize(error))),
                ]
        assert error is not None
        raise InvalidModelOutput(
            f"The model's answer did not match {output.__name__} after a repair attempt "
            f"({error.error_count()} problems)"
        ) from error

    async def _admit(
        self,
        messages: Sequence[Message],
        app: str,
        purpose: str,
        user_id: UUID | None,
        tools: Sequence[Tool],
        tool_choice: ToolChoice | None,
        max_tokens: int | None,
        temperature: float | None,
    ) -> tuple[ResolvedProfile, ChatRequest]:
        """The purpose's profile and the request, once the user's budget allows a call."""
        profile = self._prepare(app, purpose)
        await self._ledger.ensure_budget(user_id, app)
        request = self._request(
            profile,
            messages,
            tools=tools,
            tool_choice=tool_choice,
            max_tokens=max_tokens,
            temperature=temperature,
        )
        return profile, request

    def _prepare(self, app: str, purpose: str) -> ResolvedProfile:
        if not _APP.match(app):
            raise ValueError(f"{app!r} is not an app name")
        return self.profile(purpose)

    async def _complete(
        self,
        profile: ResolvedProfile,
        request: ChatRequest,
        app: str,
        user_id: UUID | None,
        kind: str,
        prompt: RenderedPrompt | None,
        check: Callable[[Completion], None] | None = None,
    ) -> Completion:
        """Call the provider and record the call; `check` validates the reply, and a reply
        it refuses is recorded as `ai_invalid_output` and raised as `_InvalidAttempt`."""
        provider = self.provider(profile)
        started = time.perf_counter()
        outcome, usage = "cancelled", TokenUsage()
        try:
            completion = await provider.complete(request)
            usage = completion.usage
            if check is not None:
                try:
                    check(completion)
                except ValidationError as exc:
                    outcome = InvalidModelOutput.code
                    raise _InvalidAttempt(exc, completion) from exc
            outcome = "ok"
            return completion
        except _InvalidAttempt:
            raise
        except ProblemError as exc:
            outcome = exc.code
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            self._ledger.record_soon(
                self._record(profile, app, user_id, kind, prompt, usage, started, outcome)
            )

    @staticmethod
    def _record(
        profile: ResolvedProfile,
        app: str,
        user_id: UUID | None,
        kind: str,
        prompt: RenderedPrompt | None,
        usage: TokenUsage,
        started: float,
        outcome: str,
    ) -> CallRecord:
        return CallRecord(
            app=app,
            purpose=profile.purpose,
            kind=kind,
            provider=profile.provider,
            model=profile.model,
            user_id=user_id,
            usage=usage,
            latency_seconds=time.perf_counter() - started,
            outcome=outcome,
            prompt=prompt.label if prompt else None,
        )


class _InvalidAttempt(Exception):
    """A structured reply that did not validate; carries the error and the reply."""

    def __init__(self, error: ValidationError, completion: Completion) -> None:
        super().__init__(str(error))
        self.error = error
        self.completion = completion


def _summarize(error: ValidationError, limit: int = 5) -> str:
    parts = []
    for item in error.errors()[:limit]:
        where = ".".join(str(part) for part in item["loc"]) or "the object"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)

"""What every chat provider offers the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from veche.kernel.ai.types import ChatRequest, Completion, StreamEvent

HealthState = Literal["ok", "degraded", "down", "unloaded"]


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """How a provider is doing, as `/api/v1/ai/models` shows it (never a secret or a URL)."""

    provider: str
    state: HealthState
    detail: str = ""


class ChatProvider(Protocol):
    """A chat model backend. Errors leave as `veche.kernel.ai.errors` problems."""

    name: str

    def problems(self) -> list[str]:
        """Configuration problems found without calling anything (for `veche check`)."""
        ...

    async def complete(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Text deltas as they come, then exactly one `Completion` with the whole reply."""
        ...

    def health(self) -> ProviderHealth: ...

    async def aclose(self) -> None: ...

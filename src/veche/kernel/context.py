"""Per-request context: request id, client address and user, carried in contextvars.

The request middleware sets them; logs, audit rows and problem responses read them, so no
function has to pass a request object down just to say which request it serves.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from uuid import UUID


@dataclass(slots=True)
class RequestContext:
    request_id: str
    client_ip: str | None = None
    user_id: UUID | None = None
    # Headers any layer may add to the response (rate limit state, for one).
    response_headers: dict[str, str] = field(default_factory=dict)


_current: ContextVar[RequestContext | None] = ContextVar("veche_request", default=None)


def current_request() -> RequestContext | None:
    return _current.get()


def current_request_id() -> str | None:
    context = _current.get()
    return context.request_id if context else None


def bind_request(context: RequestContext) -> object:
    """Make `context` current; returns a token for `unbind_request`."""
    return _current.set(context)


def unbind_request(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]

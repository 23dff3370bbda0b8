"""The access token behind a realtime connection: who it is, until when, and whether its
session still stands.

Long-lived connections outlive the access tokens that opened them; the hub closes them at
the token's `exp` unless the client presents a fresh one (WebSocket) or reconnects with
one (SSE, NDJSON).
"""

from __future__ import annotations

from dataclasses import dataclass

from veche.kernel.errors import ProblemError
from veche.kernel.identity.errors import ExpiredAccessToken, InvalidAccessToken
from veche.kernel.identity.models import User
from veche.kernel.identity.service import authenticate
from veche.kernel.identity.tokens import InvalidToken
from veche.kernel.realtime.hub import StillValid
from veche.kernel.runtime import Kernel


@dataclass(frozen=True, slots=True)
class Credential:
    user: User
    expires_at: float  # the token's `exp`, Unix seconds


def token_expiry(kernel: Kernel, token: str) -> float:
    """The `exp` of an access token that was just authenticated (a cache hit, no DB)."""
    try:
        return float(kernel.tokens.verify(token).expires_at)
    except InvalidToken as exc:
        if exc.expired:
            raise ExpiredAccessToken("The access token has expired") from exc
        raise InvalidAccessToken(f"The access token is invalid: {exc.reason}") from exc


async def credential(kernel: Kernel, token: str) -> Credential:
    """Authenticate `token` (signature, expiry, session, account) and read its expiry."""
    authenticated = await authenticate(kernel, token)
    return Credential(authenticated.user, token_expiry(kernel, token))


def session_check(kernel: Kernel, token: str) -> StillValid:
    """Whether the session behind `token` still stands; its expiry is the timer's job."""

    async def still_valid() -> bool:
        try:
            await authenticate(kernel, token)
        except ExpiredAccessToken:
            return True
        except ProblemError:
            return False
        return True

    return still_valid

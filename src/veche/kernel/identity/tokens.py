"""Access tokens: short-lived JWTs with a fixed algorithm and `kid`-based key rotation.

Refresh tokens are not JWTs: they are opaque random strings stored only as hashes (see
`service`), so one can never be mistaken for an access token. The signing key is derived
from `VECHE_SECRET_KEY`; previous keys in `VECHE_PREVIOUS_SECRET_KEYS` still verify tokens
they signed until those expire, which is how keys rotate without logging anyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from uuid import UUID

import jwt

from veche.kernel.db import new_id
from veche.settings import AuthSettings

ALGORITHM = "HS256"
ALLOWED_ALGORITHMS = frozenset({ALGORITHM})
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - RFC 9068 token type
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "sub", "sid", "jti"]
VERIFIED_CACHE_SIZE = 4096


class InvalidToken(Exception):
    """The token is not one this service issued, or is no longer valid."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: UUID
    session_id: UUID
    issued_at: float
    expires_at: int
    token_id: str


def derive_key(secret: str, purpose: str) -> bytes:
    """A key for one purpose, so no two features ever share key material."""
    return hmac.new(secret.encode(), f"veche:{purpose}".encode(), hashlib.sha256).digest()


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


class AccessTokens:
    """Issue and verify access tokens."""

    def __init__(self, secrets_newest_first: list[str], auth: AuthSettings) -> None:
        keys = [derive_key(secret, "jwt-access") for secret in secrets_newest_first]
        self._signing_key = keys[0]
        self._signing_kid = key_id(keys[0])
        self._verify_keys = {key_id(key): key for key in keys}
        self._auth = auth
        # Tokens whose signature and claims were verified, newest use last. A token's bytes
        # never change, so only its expiry needs checking again; parsing and HMAC-checking
        # it on every request cost more than the rest of an authenticated read.
        self._verified: OrderedDict[str, AccessClaims] = OrderedDict()

    def issue(self, user_id: UUID, session_id: UUID) -> tuple[str, int]:
        """A signed access token for this user and session, and its lifetime in seconds."""
        now = time.time()
        ttl = self._auth.access_token_ttl_seconds
        claims = {
            "iss": self._auth.issuer,
            "aud": self._auth.audience,
            "sub": str(user_id),
            "sid": str(session_id),
            # Sub-second precision: a token issued right after "log out everywhere" is not
            # cut off by the same second's cut-off.
            "iat": round(now, 6),
            "nbf": int(now),
            "exp": int(now) + ttl,
            "jti": new_id().hex,
        }
        headers = {"kid": self._signing_kid, "typ": ACCESS_TOKEN_TYPE}
        token = jwt.encode(claims, self._signing_key, algorithm=ALGORITHM, headers=headers)
        return token, ttl

    def verify(self, token: str) -> AccessClaims:
        """The claims of a token this service issued and that has not expired."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify_fully(token)
            self._verified[token] = claims
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        else:
            if time.time() >= claims.expires_at + self._auth.clock_skew_seconds:
                del self._verified[token]
                raise InvalidToken("token expired", expired=True)
            self._verified.move_to_end(token)
        return claims

    def _verify_fully(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise InvalidToken("token algorithm not accepted")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidToken("not an access token")
        key = self._verify_keys.get(str(header.get("kid")))
        if key is None:
            raise InvalidToken("unknown signing key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._auth.audience,
                issuer=self._auth.issuer,
                leeway=self._auth.clock_skew_seconds,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired", expired=True) from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("token rejected") from exc
        try:
            return AccessClaims(
                user_id=UUID(claims["sub"]),
                session_id=UUID(claims["sid"]),
                issued_at=float(claims["iat"]),
                expires_at=int(claims["exp"]),
                token_id=str(claims["jti"]),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidToken("token claims malformed") from exc


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    """Refresh tokens carry 256 random bits, so one fast hash stores them safely."""
    return hashlib.sha256(token.encode()).hexdigest()

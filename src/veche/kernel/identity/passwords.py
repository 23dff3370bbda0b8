"""Password hashing (argon2id through pwdlib) and the password policy.

Hashing runs in worker threads, never on the event loop, with a cap on how many hashes run
at once so a burst of logins queues instead of starving the process of CPU and memory.
The policy follows NIST SP 800-63B: a length range, no composition rules, and a check
against common and guessable passwords (zxcvbn's dictionaries); nothing is truncated.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from zxcvbn import zxcvbn

from veche.settings import AuthSettings


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """The outcome of checking a stored hash: whether it matched, and a fresher hash."""

    valid: bool
    new_hash: str | None = None


class PasswordHasher:
    """Hash and verify passwords off the event loop with bounded concurrency."""

    def __init__(self, auth: AuthSettings) -> None:
        self._hash = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=auth.argon2_time_cost,
                    memory_cost=auth.argon2_memory_kib,
                    parallelism=auth.argon2_parallelism,
                ),
            )
        )
        self._slots = asyncio.Semaphore(auth.max_concurrent_hashes)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hash.hash, password)

    async def verify(self, password: str, stored_hash: str) -> PasswordCheck:
        async with self._slots:
            valid, updated = await asyncio.to_thread(
                self._hash.verify_and_update, password, stored_hash
            )
        return PasswordCheck(valid=valid, new_hash=updated)

    async def waste_time(self, password: str) -> None:
        """Spend one verification's time, so an unknown account answers as slowly as a
        known one with a wrong password."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("veche-timing-equalizer")
        await self.verify(password, self._dummy_hash)


def password_problems(
    password: str,
    auth: AuthSettings,
    *,
    email: str | None = None,
    user_inputs: tuple[str, ...] = (),
) -> list[str]:
    """Every reason the password is refused, in words a person can act on (empty: fine)."""
    length = len(password)
    if length < auth.password_min_length:
        return [f"must be at least {auth.password_min_length} characters (got {length})"]
    if length > auth.password_max_length:
        return [f"must be at most {auth.password_max_length} characters (got {length})"]
    if not password.strip():
        return ["must not be only white space"]
    if email and _built_on(email, password):
        return ["must not contain your email address"]
    inputs = [item for item in (email, *user_inputs) if item]
    result = zxcvbn(password, user_inputs=inputs, max_length=auth.password_max_length)
    if result["score"] >= auth.password_min_score:
        return []
    feedback = result.get("feedback") or {}
    reasons = ["is too easy to guess"]
    if feedback.get("warning"):
        reasons.append(str(feedback["warning"]).rstrip("."))
    reasons.extend(str(item).rstrip(".") for item in feedback.get("suggestions", []))
    return reasons


def _built_on(email: str, password: str) -> bool:
    """Whether the password is the email address, or mostly its local part."""
    folded, local_part = password.casefold(), email.split("@", 1)[0].casefold()
    if email.casefold() in folded:
        return True
    return len(local_part) >= 3 and local_part in folded and 2 * len(local_part) >= len(folded)

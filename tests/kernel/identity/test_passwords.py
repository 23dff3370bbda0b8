"""argon2id hashing at the configured profile and the password policy."""

from __future__ import annotations

import asyncio
import threading

import pytest

from veche.kernel.identity.passwords import PasswordHasher, password_problems
from veche.settings import AuthSettings


async def test_default_profile_is_owasp_argon2id() -> None:
    hasher = PasswordHasher(AuthSettings())
    stored = await hasher.hash("correct horse battery staple")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert (await hasher.verify("correct horse battery staple", stored)).valid
    assert not (await hasher.verify("correct horse battery stapl", stored)).valid


async def test_hashes_from_older_parameters_are_upgraded_on_verify() -> None:
    old = PasswordHasher(AuthSettings(argon2_memory_kib=8 * 1024, argon2_time_cost=1))
    stored = await old.hash("a long and lovely phrase")
    check = await PasswordHasher(AuthSettings()).verify("a long and lovely phrase", stored)
    assert check.valid
    assert check.new_hash is not None
    assert check.new_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


async def test_hashing_runs_off_the_event_loop_with_a_concurrency_cap() -> None:
    hasher = PasswordHasher(AuthSettings(max_concurrent_hashes=2, argon2_time_cost=1))
    loop_thread = threading.get_ident()
    seen: set[int] = set()
    running, peak = 0, 0
    original = hasher._hash.hash

    def spy(password: str) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        seen.add(threading.get_ident())
        try:
            return original(password)
        finally:
            running -= 1

    hasher._hash.hash = spy  # type: ignore[method-assign]
    await asyncio.gather(*(hasher.hash(f"password number {i}") for i in range(6)))
    assert loop_thread not in seen
    assert 1 <= peak <= 2


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("1234567", "at least 8 characters"),
        ("        ", "must not be only white space"),
        ("qwertyuiop", "too easy to guess"),
        ("iloveyou", "too easy to guess"),
        ("P@ssw0rd", "too easy to guess"),
        ("x" * 129, "at most 128 characters"),
        ("BobbyBob@Example.org!", "must not contain your email address"),
        ("bobbybob", "must not contain your email address"),
    ],
)
def test_policy_refuses_with_reasons(password: str, reason: str) -> None:
    reasons = password_problems(password, AuthSettings(), email="bobbybob@example.org")
    assert reasons, password
    assert any(reason in item for item in reasons), reasons


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",
        "Tr0ub4dor&3-but-longer",
        "пароль со словами и смыслом",  # noqa: RUF001
        "z" * 7 + "!Q9@w#E4",
    ],
)
def test_policy_accepts_good_passwords(password: str) -> None:
    assert password_problems(password, AuthSettings(), email="ann@example.com") == []


def test_maximum_length_is_configurable_and_at_least_64() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 64"):
        AuthSettings(password_max_length=32)
    wide = AuthSettings(password_max_length=256)
    assert password_problems("river stone " * 20, wide) == []

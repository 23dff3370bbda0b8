"""IdentityService directly: linked identities and races the HTTP tests cannot pin down."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import PASSWORD
from veche.kernel.identity import IdentityService, User
from veche.kernel.identity.errors import EmailTaken, IdentityAlreadyLinked
from veche.kernel.runtime import Kernel


async def create_user(kernel: Kernel, email: str = "ann@example.com", **overrides: str) -> User:
    async with kernel.db.unit_of_work() as session:
        return await IdentityService(session, kernel).register(
            email=email,
            password=overrides.get("password", PASSWORD),
            display_name=overrides.get("display_name", "Ann"),
            role=overrides.get("role", "user"),
        )


async def test_linking_a_telegram_identity(kernel: Kernel) -> None:
    ann = await create_user(kernel)
    bob = await create_user(kernel, "bob@example.com", display_name="Bob")
    async with kernel.db.unit_of_work() as session:
        service = IdentityService(session, kernel)
        linked = await service.link_identity(ann, "telegram", "123456", {"username": "ann"})
        assert linked.user_id == ann.id
        again = await service.link_identity(ann, "telegram", "123456")
        assert again.id == linked.id
    async with kernel.db.unit_of_work() as session:
        service = IdentityService(session, kernel)
        found = await service.user_by_identity("telegram", "123456")
        assert found is not None
        assert found.id == ann.id
        assert await service.user_by_identity("telegram", "999") is None
        with pytest.raises(IdentityAlreadyLinked):
            await service.link_identity(bob, "telegram", "123456")


async def test_concurrent_registrations_of_one_email_create_one_account(kernel: Kernel) -> None:
    results = await asyncio.gather(
        *(create_user(kernel, "race@example.com") for _ in range(4)), return_exceptions=True
    )
    created = [result for result in results if isinstance(result, User)]
    refused = [result for result in results if isinstance(result, EmailTaken)]
    assert len(created) == 1, results
    assert len(refused) == 3, results

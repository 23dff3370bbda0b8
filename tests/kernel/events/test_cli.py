"""`veche events ...` and `veche worker --help`: through Typer's runner, on the session's
migrated test database (see tests/test_cli.py for why commands run on their own thread)."""

from __future__ import annotations

import asyncio

import pytest

from tests.test_cli import cli_environment, on_own_thread, refusal, test_database, veche
from veche.kernel.db import Database, new_id
from veche.kernel.events import DeadLetter
from veche.settings import Settings

__all__ = ["cli_environment", "test_database"]


def add_dead_letter(database_url: str) -> DeadLetter:
    async def write() -> DeadLetter:
        database = Database.from_settings(Settings(_env_file=None, database_url=database_url))
        letter = DeadLetter(
            consumer="gone-consumer",
            event_id=new_id(),
            event_type="ledger.entry.recorded",
            event={},
            error_type="Boom",
            error_message="it broke",
            attempts=5,
        )
        try:
            async with database.unit_of_work() as session:
                session.add(letter)
        finally:
            await database.dispose()
        return letter

    return on_own_thread(lambda: asyncio.run(write()))


@pytest.mark.usefixtures("test_database")
def test_consumers_and_dead_letters_are_listed(test_database: str) -> None:
    consumers = veche("events", "consumers")
    assert consumers.exit_code == 0, consumers.output

    assert "No dead letters." in veche("events", "dead-letters").output
    letter = add_dead_letter(test_database)

    listed = veche("events", "dead-letters", "--consumer", "gone-consumer")
    assert listed.exit_code == 0, listed.output
    assert str(letter.id) in listed.output
    assert "Boom: it broke" in listed.output


@pytest.mark.usefixtures("test_database")
def test_replay_refuses_what_it_cannot_do(test_database: str) -> None:
    assert "Nothing to replay" in refusal(veche("events", "replay"))
    assert "No dead letter has the id" in refusal(veche("events", "replay", str(new_id())))
    letter = add_dead_letter(test_database)
    assert "No consumer is named 'gone-consumer'" in refusal(
        veche("events", "replay", str(letter.id))
    )
    assert "No consumer is named" in refusal(
        veche("events", "replay", "--consumer", "nobody", "--since", "2026-01-01T00:00:00")
    )
    assert veche("events", "replay", "not-a-uuid").exit_code == 2


def test_the_worker_command_is_documented() -> None:
    result = veche("worker", "--help")
    assert result.exit_code == 0
    assert "serving no HTTP" in result.output

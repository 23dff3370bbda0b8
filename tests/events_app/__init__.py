"""A test-only app that emits events and consumes them: its consumers write audit rows
(a kernel table) so a test can count a handler's database side effects."""

from __future__ import annotations

import asyncio
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from veche.kernel import AppModule, Manifest, record
from veche.kernel.events import ConsumerContext, Event, consumer

# Notes whose entries the auditor refuses, until a test lets them through.
FAILING_NOTES: set[str] = set()
# Notes whose entries the auditor holds until a test sets their gate; the notes of the
# entries it has started to audit or refused, in order.
GATES: dict[str, asyncio.Event] = {}
SEEN_NOTES: list[str] = []


class EntryRecorded(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_version: ClassVar[int] = 2

    amount: int
    note: Annotated[str, Field(max_length=100)] = ""


class EntryVoided(BaseModel):
    entry_id: str


class EntryNoted(BaseModel):
    """Consumed by nobody: the journal, of two other types, must never see it."""

    entry_id: str


class AuditorRefused(RuntimeError):
    pass


@consumer("ledger.entry.recorded", name="ledger-auditor")
async def audit_entry(event: Event, context: ConsumerContext) -> None:
    entry = event.parse(EntryRecorded)
    SEEN_NOTES.append(entry.note)
    if entry.note in GATES:
        await GATES[entry.note].wait()
    if entry.note in FAILING_NOTES:
        raise AuditorRefused(f"refusing entry {entry.note!r}")
    record(
        context.session,
        "ledger.entry.audited",
        actor_id=event.actor_id,
        target_type="event",
        target_id=event.id,
        data={"amount": entry.amount, "note": entry.note, "attempt": context.attempt},
    )


@consumer("ledger.entry.recorded", "ledger.entry.voided", name="ledger-journal")
async def journal(event: Event, context: ConsumerContext) -> None:
    record(
        context.session,
        "ledger.journal",
        actor_id=None,
        target_type="event",
        target_id=event.id,
        data={"type": event.type},
    )


module = AppModule(
    name="ledger",
    manifest=Manifest.from_package("tests.events_app"),
    events={
        "ledger.entry.recorded": EntryRecorded,
        "ledger.entry.voided": EntryVoided,
        "ledger.entry.noted": EntryNoted,
    },
    consumers=[audit_entry, journal],
)

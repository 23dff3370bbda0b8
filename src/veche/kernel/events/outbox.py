"""`emit()`: write an event to the outbox inside the caller's transaction.

The event row commits or rolls back with the change it describes, so an event exists
exactly when its change does. Emitting marks the session; when that session commits,
the relay of the process is woken to publish at once (polling is only the fallback for
events committed by other processes).

On SQLite with the embedded log there is no relay step: the row's own INSERT gives it
the next log position. SQLite has one writer, held from a transaction's first write to
its commit, so positions handed out under it follow commit order, which is what the
relay would give. The commit then wakes the consumers directly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ValidationError
from sqlalchemy import event as orm_event
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from veche.kernel.events import metrics
from veche.kernel.events.envelope import (
    Event,
    EventError,
    InvalidEventPayload,
    UndeclaredEvent,
    app_of,
    schema_version,
)
from veche.kernel.events.models import OutboxEvent

REGISTRY_KEY = "veche.events.registry"
_EMITTED_KEY = "veche.events.emitted"


class EventRegistry:
    """The event types the mounted apps declare, and who to wake after a commit (given
    the types of the events it committed)."""

    def __init__(self) -> None:
        self.types: dict[str, type[BaseModel]] = {}
        self.on_commit: Callable[[list[str]], None] = lambda _types: None
        # Emitted rows take their log position in their own INSERT (module docstring).
        self.positions_at_emit = False

    def declare(self, app: str, events: Mapping[str, type[BaseModel]]) -> None:
        for event_type, model in events.items():
            if app_of(event_type) != app:
                raise EventError(f"app {app!r} cannot declare {event_type!r}")
            known = self.types.get(event_type)
            if known is not None and known is not model:
                raise EventError(f"{event_type!r} is declared twice with different payloads")
            self.types[event_type] = model

    def build(
        self,
        event_type: str,
        payload: BaseModel | Mapping[str, Any],
        *,
        subject: str | None,
        actor_id: UUID | None,
    ) -> Event:
        model = self.types.get(event_type)
        if model is None:
            raise UndeclaredEvent(f"{event_type!r} is not an event type any mounted app declares")
        if isinstance(payload, BaseModel):
            if type(payload) is not model:
                raise InvalidEventPayload(
                    f"{event_type!r} carries {model.__name__}, not {type(payload).__name__}"
                )
            instance = payload
        else:
            try:
                instance = model.model_validate(dict(payload))
            except ValidationError as exc:
                raise InvalidEventPayload(f"{event_type!r}: {exc}") from exc
        return Event(
            type=event_type,
            source=app_of(event_type),
            subject=subject,
            actor_id=actor_id,
            schema_version=schema_version(model),
            data=instance.model_dump(mode="json"),
        )


def registry_of(session: AsyncSession | Session) -> EventRegistry:
    registry = session.info.get(REGISTRY_KEY)
    if not isinstance(registry, EventRegistry):
        raise EventError("this session does not come from a kernel with events installed")
    return registry


async def emit(
    session: AsyncSession,
    event_type: str,
    payload: BaseModel | Mapping[str, Any],
    *,
    subject: str | None = None,
    actor_id: UUID | None = None,
) -> Event:
    """Add the event to the caller's unit of work; it is published once that commits.

    Raises `UndeclaredEvent` or `InvalidEventPayload` (both `EventError`) when the type
    is not declared by a mounted app or the payload does not fit its model. Never commits.
    """
    registry = registry_of(session)
    event = registry.build(event_type, payload, subject=subject, actor_id=actor_id)
    row = outbox_row(event)
    if registry.positions_at_emit:
        # Evaluated by the row's INSERT, under SQLite's one writer: one INSERT per such
        # row, so two events of one transaction take consecutive positions.
        row.log_position = _NEXT_POSITION
        row.published_at = event.time
    # Not flushed here: the rows of a unit of work go to the database together when it
    # flushes or commits.
    session.add(row)
    session.info.setdefault(_EMITTED_KEY, []).append(event.type)
    metrics.EMITTED.labels(event.type).inc()
    return event


_NEXT_POSITION = select(func.coalesce(func.max(OutboxEvent.log_position), 0) + 1).scalar_subquery()


def outbox_row(event: Event) -> OutboxEvent:
    return OutboxEvent(
        id=event.id,
        type=event.type,
        source=event.source,
        subject=event.subject,
        actor_id=event.actor_id,
        occurred_at=event.time,
        schema_version=event.schema_version,
        data=event.data,
    )


def envelope_of(row: OutboxEvent) -> Event:
    return Event(
        id=row.id,
        type=row.type,
        source=row.source,
        subject=row.subject,
        time=row.occurred_at,
        actor_id=row.actor_id,
        schema_version=row.schema_version,
        data=row.data,
    )


@orm_event.listens_for(Session, "after_commit")
def _wake_relay(session: Session) -> None:
    types = session.info.pop(_EMITTED_KEY, None)
    if types:
        registry = session.info.get(REGISTRY_KEY)
        if isinstance(registry, EventRegistry):
            registry.on_commit(types)


@orm_event.listens_for(Session, "after_rollback")
def _forget_emitted(session: Session) -> None:
    session.info.pop(_EMITTED_KEY, None)

"""Durable events: the envelope, `emit()` into the transactional outbox, the relay that
publishes committed events, consumers that handle each event once (idempotent by event
id, retried with backoff, dead-lettered after the last attempt), the backends (the SQL
outbox as the log, embedded, or NATS JetStream with `VECHE_EVENTS_URL=nats://...`) and
the retention job that prunes outbox and processed rows nothing needs any more."""

from veche.kernel.events.bus import EventBus
from veche.kernel.events.consumers import Consumer, ConsumerContext, consumer
from veche.kernel.events.envelope import Event, EventError, InvalidEventPayload, UndeclaredEvent
from veche.kernel.events.models import ConsumerOffset, DeadLetter, OutboxEvent, ProcessedEvent
from veche.kernel.events.outbox import emit

__all__ = [
    "Consumer",
    "ConsumerContext",
    "ConsumerOffset",
    "DeadLetter",
    "Event",
    "EventBus",
    "EventError",
    "InvalidEventPayload",
    "OutboxEvent",
    "ProcessedEvent",
    "UndeclaredEvent",
    "consumer",
    "emit",
]

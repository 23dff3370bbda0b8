"""Event backends: where published events live and how consumers read them.

`sql` keeps the outbox table itself as the log with an offset per consumer (the embedded
default); `nats` publishes to NATS JetStream and reads through durable pull consumers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from veche.kernel.events.consumers import Consumer
from veche.kernel.events.models import OutboxEvent
from veche.kernel.stopping import StopSignal

if TYPE_CHECKING:
    from veche.kernel.runtime import Kernel


class Backend(Protocol):
    async def publish(self, session: AsyncSession, rows: Sequence[OutboxEvent]) -> None:
        """Publish committed outbox rows; the caller marks them sent in `session`."""

    def published(self, types: Collection[str] | None = None) -> None:
        """Called after a relay batch committed: wake the local consumers of those event
        types (all of them when None)."""

    async def run_consumer(self, kernel: Kernel, consumer: Consumer, stop: StopSignal) -> None:
        """Deliver events to the consumer until `stop` is requested, then return after the
        batch in hand (a handler waiting to retry stops waiting)."""

    async def lag(self, kernel: Kernel, consumer: Consumer) -> int:
        """Published events the consumer has not handled yet."""

    async def rewind(self, kernel: Kernel, consumer: Consumer, since: dt.datetime) -> None:
        """Deliver the consumer's events again from `since` on."""

    async def retained_since(self, kernel: Kernel, consumer: Consumer) -> dt.datetime | None:
        """The earliest time a rewind of the consumer can start from without missing
        pruned events; None when nothing it reads has been pruned."""

    async def ping(self) -> None:
        """Raise unless the backend answers (readiness, `veche check`)."""

    async def close(self) -> None: ...


def create_backend(url: str | None, prefix: str) -> Backend:
    if url is None or url.startswith("sql"):
        from veche.kernel.events.backends.sql import SqlBackend

        return SqlBackend()
    if url.startswith(("nats://", "tls://")):
        from veche.kernel.events.backends.nats import NatsBackend

        return NatsBackend(url, prefix)
    raise ValueError(f"VECHE_EVENTS_URL: no events backend for {url!r} (use nats://...)")

"""The production events backend: NATS JetStream.

One stream per app (`<PREFIX>_<APP>`, subjects `<prefix>.<app>.>`); the relay publishes
each outbox row with `Nats-Msg-Id` set to the event id, so JetStream drops a duplicate
publish (a relay that crashed between publishing and marking the row sent) inside the
stream's duplicate window. Each consumer reads every stream it needs through a durable
pull consumer with explicit acks, fetching up to a batch of events at a time and handling
them in stream order in one unit of work, then acknowledging them. When a handler fails,
the batch is handled again event by event, retrying the failing one in place (telling the
server it is still in progress) and dead-lettering it after the last attempt, so later
events never overtake it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import NotFoundError
from pydantic import ValidationError
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from veche.kernel.events import metrics
from veche.kernel.events.consumers import Consumer, DeliveryStopped, deliver, handle_batch
from veche.kernel.events.envelope import Event, app_of
from veche.kernel.events.models import OutboxEvent, ProcessedEvent
from veche.kernel.events.outbox import envelope_of
from veche.kernel.events.uuids import uuid7_floor
from veche.kernel.stopping import StopSignal

if TYPE_CHECKING:
    from veche.kernel.runtime import Kernel

log = structlog.get_logger("veche.events")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
PING_TIMEOUT_SECONDS = 2  # nats-py types its timeouts as int
PUBLISH_TIMEOUT_SECONDS = 10.0


class NatsBackend:
    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._streams: set[str] = set()
        self._lock = asyncio.Lock()

    def stream_name(self, app: str) -> str:
        return _UNSAFE.sub("_", f"{self.prefix}_{app}").upper()

    def subject(self, event_type: str) -> str:
        return f"{self.prefix}.{event_type}"

    def durable_name(self, consumer: Consumer) -> str:
        return _UNSAFE.sub("_", f"{self.prefix}_{consumer.name}")

    async def jetstream(self) -> JetStreamContext:
        async with self._lock:
            if self._client is None or self._client.is_closed:
                client = Client()
                await client.connect(
                    self.url, name="veche-events", max_reconnect_attempts=-1, drain_timeout=5
                )
                self._client = client
                self._js = None
            if self._js is None:
                # One context per connection: it holds the reply subscription of async publishes.
                self._js = self._client.jetstream(publish_async_max_pending=10_000)
            return self._js

    async def ping(self) -> None:
        """A round trip to the server: on the open connection if there is one, else on a
        short-lived one that gives up instead of reconnecting forever."""
        client = self._client
        if client is not None and client.is_connected:
            await client.flush(timeout=PING_TIMEOUT_SECONDS)
            return
        probe = Client()

        async def quiet(_error: Exception) -> None:
            return None

        try:
            await probe.connect(
                self.url,
                name="veche-events-ping",
                allow_reconnect=False,
                connect_timeout=PING_TIMEOUT_SECONDS,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                error_cb=quiet,
            )
            await probe.flush(timeout=PING_TIMEOUT_SECONDS)
        finally:
            if not probe.is_closed:
                await probe.close()

    async def ensure_stream(self, app: str) -> str:
        name = self.stream_name(app)
        if name in self._streams:
            return name
        js = await self.jetstream()
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(name=name, subjects=[f"{self.prefix}.{app}.>"], duplicate_window=120)
            )
        self._streams.add(name)
        return name

    async def publish(self, session: AsyncSession, rows: Sequence[OutboxEvent]) -> None:
        """Send the whole batch in order without waiting in between, then wait for every
        acknowledgement; any refusal fails the batch, which the relay sends again (the
        message ids make the repeats harmless)."""
        js = await self.jetstream()
        acks = []
        for row in rows:
            stream = await self.ensure_stream(row.source)
            event = envelope_of(row)
            acks.append(
                await js.publish_async(
                    self.subject(event.type),
                    event.model_dump_json().encode(),
                    stream=stream,
                    headers={"Nats-Msg-Id": str(event.id)},
                )
            )
        if acks:
            async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
                await asyncio.gather(*acks)

    def published(self, types: Collection[str] | None = None) -> None:
        return None

    async def _streams_of(self, consumer: Consumer) -> dict[str, list[str]]:
        by_stream: dict[str, list[str]] = {}
        for event_type in consumer.event_types:
            stream = await self.ensure_stream(app_of(event_type))
            by_stream.setdefault(stream, []).append(self.subject(event_type))
        return by_stream

    async def _ensure_consumer(
        self,
        kernel: Kernel,
        consumer: Consumer,
        stream: str,
        subjects: list[str],
        since: dt.datetime | None = None,
    ) -> None:
        js = await self.jetstream()
        durable = self.durable_name(consumer)
        settings = kernel.settings.events
        if since is None:
            try:
                info = await js.consumer_info(stream, durable)
            except NotFoundError:
                pass
            else:
                if info.config.max_ack_pending == settings.batch_size:
                    return
                # Made with another batch size: the server updates it in place.
        config: dict[str, Any] = {
            "durable_name": durable,
            "ack_policy": AckPolicy.EXPLICIT,
            "ack_wait": settings.ack_wait_seconds,
            # Our own dead-lettering acts on the last attempt; the margin covers
            # deliveries lost to a crash mid-handler.
            "max_deliver": settings.max_attempts + 2,
            # One batch in flight: a fetch never holds more than the consumer handles.
            "max_ack_pending": settings.batch_size,
        }
        if len(subjects) == 1:
            config["filter_subject"] = subjects[0]
        else:
            config["filter_subjects"] = subjects
        if since is not None:
            config["deliver_policy"] = DeliverPolicy.BY_START_TIME
            config["opt_start_time"] = since
        await js.add_consumer(stream, ConsumerConfig(**config))

    async def run_consumer(self, kernel: Kernel, consumer: Consumer, stop: StopSignal) -> None:
        by_stream = await self._streams_of(consumer)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.gather(
                *(
                    self._consume(kernel, consumer, stream, subjects, stop, stopping)
                    for stream, subjects in by_stream.items()
                )
            )
        finally:
            stopping.cancel()

    async def _consume(
        self,
        kernel: Kernel,
        consumer: Consumer,
        stream: str,
        subjects: list[str],
        stop: StopSignal,
        stopping: asyncio.Future[None],
    ) -> None:
        settings = kernel.settings.events
        while not stop.requested:
            try:
                await self._ensure_consumer(kernel, consumer, stream, subjects)
                js = await self.jetstream()
                subscription = await js.pull_subscribe_bind(self.durable_name(consumer), stream)
                try:
                    while not stop.requested:
                        messages = await _fetch(
                            subscription,
                            settings.batch_size,
                            settings.poll_interval_seconds,
                            stopping,
                        )
                        if messages is None:
                            metrics.LAG.labels(consumer.name).set(0)  # nothing pending
                            continue
                        if not messages:  # the pull ended with a status, no message (seen
                            continue  # under load), or a stop came first
                        await self._handle_batch(kernel, consumer, messages, stop)
                        # What the stream still holds for it (of this stream, when it
                        # reads several; the admin API sums them exactly).
                        pending = messages[-1].metadata.num_pending or 0
                        metrics.LAG.labels(consumer.name).set(pending)
                finally:
                    # Nothing left for `drain()` to wait on at shutdown.
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()
            except asyncio.CancelledError:
                raise
            except DeliveryStopped:
                return
            except Exception:
                log.exception("event_consumer_failed", consumer=consumer.name, stream=stream)
                await stop.pause(settings.poll_interval_seconds)

    async def _handle_batch(
        self, kernel: Kernel, consumer: Consumer, messages: Sequence[Msg], stop: StopSignal
    ) -> None:
        readable: list[tuple[Msg, Event]] = []
        for message in messages:
            try:
                event = Event.model_validate_json(message.data)
            except ValidationError:
                log.error("event_unreadable", consumer=consumer.name, subject=message.subject)
                await message.term()  # never readable: redelivering it cannot help
                continue
            if event.type not in consumer.event_types:
                # Servers before NATS 2.10 ignore `filter_subjects` and deliver the whole
                # stream to a consumer of several types: what it did not ask for is skipped.
                await message.ack()
                continue
            readable.append((message, event))
        if await handle_batch(kernel, consumer, [event for _, event in readable]):
            for message, _ in readable:
                await message.ack()
            return
        for index, (message, event) in enumerate(readable):
            waiting = readable[index:]

            async def still_working(waiting: list[tuple[Msg, Event]] = waiting) -> None:
                # Retries must not outlast `ack_wait` for this event or those behind it.
                for pending, _ in waiting:
                    await pending.in_progress()

            try:
                if stop.requested:
                    raise DeliveryStopped(consumer.name)
                await deliver(kernel, consumer, event, waiting=still_working, stop=stop)
            except DeliveryStopped:
                # Back to the server at once, for another worker or the next start.
                for pending, _ in waiting:
                    with contextlib.suppress(Exception):
                        await pending.nak()
                raise
            await message.ack()

    async def lag(self, kernel: Kernel, consumer: Consumer) -> int:
        js = await self.jetstream()
        total = 0
        for stream in await self._streams_of(consumer):
            try:
                info = await js.consumer_info(stream, self.durable_name(consumer))
            except NotFoundError:
                info_stream = await js.stream_info(stream)
                total += int(info_stream.state.messages)
                continue
            total += int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        return total

    async def rewind(self, kernel: Kernel, consumer: Consumer, since: dt.datetime) -> None:
        js = await self.jetstream()
        async with kernel.db.unit_of_work() as session:
            await session.execute(
                delete(ProcessedEvent).where(
                    ProcessedEvent.consumer == consumer.name,
                    ProcessedEvent.event_id >= uuid7_floor(since),
                )
            )
        for stream, subjects in (await self._streams_of(consumer)).items():
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(stream, self.durable_name(consumer))
            await self._ensure_consumer(kernel, consumer, stream, subjects, since=since)

    async def retained_since(self, kernel: Kernel, consumer: Consumer) -> dt.datetime | None:
        # The streams hold the events and the outbox prune never touches them; limits an
        # operator gives a stream (max age, max messages) are the operator's to mind.
        return None

    async def close(self) -> None:
        if self._client is not None and not self._client.is_closed:
            await self._client.drain()
        self._client = None
        self._js = None
        self._streams.clear()


async def _fetch(
    subscription: JetStreamContext.PullSubscription,
    batch: int,
    wait_seconds: float,
    stopping: asyncio.Future[None],
) -> list[Msg] | None:
    """Up to `batch` messages; None when none came within `wait_seconds`, an empty list
    when the pull ended without any or a stop was requested first. A batch that arrives
    with the stop is still returned, to be handled before the loop ends."""
    fetch = asyncio.ensure_future(subscription.fetch(batch, timeout=wait_seconds))
    racing: list[asyncio.Future[Any]] = [fetch, stopping]
    try:
        await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        fetch.cancel()  # cut off past the grace: leave no pull behind
        raise
    if not fetch.done():
        fetch.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await fetch
        return []
    try:
        return fetch.result()
    except TimeoutError:
        return None

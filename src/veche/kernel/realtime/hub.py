"""The hub: connections, subscriptions, fan-out with bounded queues, presence and shutdown.

Every transport opens a `Connection`, subscribes it through the hub (policies checked,
missed messages recovered) and drains its queue. Publishing goes through the backend, which
assigns the offset and brings the message back to every replica's hub for delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog

from veche.kernel.identity.models import User
from veche.kernel.realtime import metrics
from veche.kernel.realtime.backends import Backend
from veche.kernel.realtime.connection import (
    Connection,
)
from veche.kernel.realtime.errors import PresenceDisabled, RealtimeStopping, TooManyChannels
from veche.kernel.realtime.message import (
    EVENT_PATTERN,
    EncodedFrames,
    Member,
    Message,
    Position,
    PresenceEvent,
    ResumeTokens,
    channel_prefix,
)
from veche.kernel.realtime.policy import USER_POLICY, PolicyRegistry, Revocation
from veche.settings import RealtimeSettings, Settings

if TYPE_CHECKING:
    from veche.kernel.runtime import Kernel

log = structlog.get_logger("veche.realtime")

# How long before a connection's access token expires its session is checked again and a
# WebSocket client is told (`auth_expiring`) to send a fresh token.
AUTH_EXPIRING_SECONDS = 30.0
# Resume tokens kept signed; one entry per (channels, positions) recently delivered.
_TOKEN_CACHE_SIZE = 4096

# Whether the session behind a connection's token still stands.
StillValid = Callable[[], Awaitable[bool]]


class Hub:
    """The realtime hub of one process. `publish` is the server-side API for apps."""

    def __init__(self, settings: RealtimeSettings, backend: Backend, tokens: ResumeTokens) -> None:
        self.settings = settings
        self.backend = backend
        self.tokens = tokens
        self.policies = PolicyRegistry()
        self.policies.register("user:", USER_POLICY, owner="kernel")
        self._subscribers: dict[str, set[Connection]] = {}
        self._connections: set[Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: list[asyncio.Task[None]] = []
        self._stopping = False
        self._drained = asyncio.Event()
        self._previous_handlers: dict[int, Any] = {}
        self._handover: asyncio.Task[None] | None = None
        self._token_cache: dict[tuple[tuple[str, Position], ...], str] = {}
        self.encoded = EncodedFrames()

    @classmethod
    def from_settings(cls, settings: Settings, key: bytes) -> Hub:
        url = settings.realtime_url
        backend: Backend
        if not url:
            from veche.kernel.realtime.backends.memory import MemoryBackend

            backend = MemoryBackend(settings.realtime)
        elif url.startswith(("redis://", "rediss://", "unix://")):
            from veche.kernel.realtime.backends.redis import RedisBackend

            backend = RedisBackend(url, settings.realtime)
        else:
            raise ValueError(
                f"VECHE_REALTIME_URL: unsupported scheme in {url.split('://')[0]!r}; use redis://"
            )
        return cls(settings.realtime, backend, ResumeTokens(key))

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        await self.backend.start(self._deliver)
        self._background = [
            asyncio.create_task(self._sweep_forever(), name="realtime-sweeper"),
            asyncio.create_task(self._pulse_forever(), name="realtime-pulse"),
        ]
        self._hook_signals()

    def _hook_signals(self) -> None:
        """Under uvicorn, SIGTERM/SIGINT make it wait for open responses before the
        lifespan ends, and nothing tells a stream to stop: start draining on the signal,
        then hand it on to uvicorn's own handler."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if not callable(previous):
                continue  # not a server that handles it: leave the default alone
            self._previous_handlers[signum] = previous

            def handler(number: int, frame: FrameType | None, previous: Any = previous) -> None:
                loop = self._loop
                if self._stopping or loop is None or loop.is_closed():
                    previous(number, frame)  # a second signal: the server's own handling now
                    return
                # The connections first, then the server: uvicorn closes the WebSockets
                # still open at once (1012, without the reconnect frame) when its handler
                # has run, which raced the hub's writers on a busy machine.
                loop.call_soon_threadsafe(self._drain_then, lambda: previous(number, frame))

            signal.signal(signum, handler)

    def _unhook_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous)
        self._previous_handlers.clear()

    def request_shutdown(self) -> None:
        """Start ending every connection; safe to call from any thread or signal handler."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._begin_shutdown)

    def _drain_then(self, then: Callable[[], None]) -> None:
        """End every connection, then call `then` once they are gone or the shutdown
        timeout has passed."""
        self._begin_shutdown()

        async def handing_over() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.shutdown_timeout_seconds):
                    await self._drained.wait()
            then()

        self._handover = asyncio.get_running_loop().create_task(handing_over())

    def _begin_shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("realtime_draining", connections=len(self._connections))
        for connection in list(self._connections):
            connection.close("shutdown")
        if not self._connections:
            self._drained.set()

    async def stop(self) -> None:
        """Close every connection with reconnect advice, wait for them within the
        shutdown timeout, then release the backend."""
        self._begin_shutdown()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.shutdown_timeout_seconds):
                await self._drained.wait()
        self._unhook_signals()
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background = []
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.settings.shutdown_timeout_seconds)
        await self.backend.close()

    async def _sweep_forever(self) -> None:
        interval = min(self.settings.presence_ttl_seconds / 3, 5.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.backend.sweep()
            except Exception as exc:  # a backend hiccup must not end the sweeper
                log.warning("realtime_sweep_failed", error=str(exc))

    async def _pulse_forever(self) -> None:
        """Heartbeats for idle connections and presence refreshes for all, from one timer
        instead of one per connection. A connection idle for about `heartbeat_seconds`
        gets a heartbeat (never more than that apart); every present connection's entries
        are refreshed once per `heartbeat_seconds`, busy or not."""
        heartbeat = self.settings.heartbeat_seconds
        interval = heartbeat / 5
        refreshed = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            idle_since = now - heartbeat + interval
            for connection in self._connections:
                if connection.last_queued <= idle_since:
                    connection.heartbeat()
            if now - refreshed >= heartbeat:
                refreshed = now
                entries = [
                    (channel, connection.member)
                    for connection in self._connections
                    for channel in connection.present
                ]
                if entries:
                    try:
                        await self.backend.refresh(entries)
                    except Exception as exc:  # entries then expire by their TTL
                        log.warning("realtime_refresh_failed", error=str(exc))

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- server-side API -------------------------------------------------------------

    async def publish(self, channel: str, data: Any, *, event: str = "message") -> Message:
        """Publish `data` (JSON-serializable) on `channel` to every subscriber on every
        replica; it is kept in the channel's history. Returns the message with its offset."""
        channel_prefix(channel)
        if not EVENT_PATTERN.match(event):
            raise ValueError(f"{event!r} is not an event name (letters, digits, ._:-)")
        message = await self.backend.append(channel, event, data)
        metrics.PUBLISHED.inc()
        return message

    async def presence(self, channel: str) -> list[Member]:
        """Who is connected to `channel` right now, on every replica. A channel whose
        policy turns presence off raises `PresenceDisabled`; one no policy covers,
        `UnknownChannel`."""
        channel_prefix(channel)
        if not self.policies.presence_enabled(channel):
            raise PresenceDisabled(f"The policy of {channel!r} keeps no presence")
        return await self.backend.members(channel)

    # -- connections -----------------------------------------------------------------

    def open(self, user: User, transport: str, kernel: Kernel | None = None) -> Connection:
        """A new connection of `user`. The transports pass their `kernel`, which channel
        policies with an `audience` check need (without it those channels are refused)."""
        if self._stopping:
            raise RealtimeStopping("The server is restarting; reconnect shortly")
        connection = Connection(user, transport, self.settings.queue_size, kernel)
        self._connections.add(connection)
        self._drained.clear()
        metrics.CONNECTIONS.labels(transport).inc()
        return connection

    def disconnect(self, connection: Connection) -> None:
        """Forget a connection. Synchronous: it runs where the transport is being
        cancelled; leaving presence happens in the background."""
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        connection._cancel_auth_timer()
        metrics.CONNECTIONS.labels(connection.transport).dec()
        for channel in list(connection.channels):
            self._forget(connection, channel)
        if connection.close_reason is None:
            connection.close("goodbye")
        if not self._connections and self._stopping:
            self._drained.set()

    def _forget(self, connection: Connection, channel: str) -> None:
        connection.channels.discard(channel)
        metrics.SUBSCRIPTIONS.dec()
        subscribers = self._subscribers.get(channel)
        if subscribers is not None:
            subscribers.discard(connection)
            if not subscribers:
                del self._subscribers[channel]
        if channel in connection.present:
            connection.present.discard(channel)
            self._spawn(self._leave(channel, connection.member))

    async def _leave(self, channel: str, member: Member) -> None:
        try:
            await self.backend.leave(channel, member)
        except Exception as exc:  # presence then expires by its TTL
            log.warning("realtime_leave_failed", channel=channel, error=str(exc))

    async def authorize(self, connection: Connection, channels: list[str]) -> None:
        """Refuse the whole request if any channel is not allowed (before a stream starts)."""
        if len(connection.channels) + len(channels) > self.settings.max_channels:
            raise TooManyChannels(
                f"At most {self.settings.max_channels} channels per connection",
            )
        for channel in channels:
            await self.policies.authorize_subscribe(connection.user, channel, connection.kernel)

    async def subscribe(
        self, connection: Connection, channel: str, since: Position | None = None
    ) -> None:
        """Subscribe after checking the policy: queue a `subscribed` frame (with
        `recovered` when resuming), then the missed messages, then live ones, in order."""
        if channel in connection.channels:
            await self.unsubscribe(connection, channel)
        await self.authorize(connection, [channel])
        with_presence = self.policies.presence_enabled(channel)
        connection._pending[channel] = []
        connection.channels.add(channel)
        metrics.SUBSCRIPTIONS.inc()
        self._subscribers.setdefault(channel, set()).add(connection)
        members: list[Member] | None = None
        try:
            recovery = await self.backend.read(channel, since)
            if with_presence:
                connection.present.add(channel)
                await self.backend.join(channel, connection.member)
                members = await self.backend.members(channel)
        except BaseException:
            connection._pending.pop(channel, None)
            self._forget(connection, channel)
            raise
        pending = connection._pending.pop(channel)
        if recovery.recovered and since is not None:
            connection.positions[channel] = since
        else:
            connection.positions[channel] = Position(recovery.epoch, recovery.offset)
        connection.send(
            {
                "type": "subscribed",
                "channel": channel,
                "epoch": recovery.epoch,
                "offset": recovery.offset,
                "recovered": recovery.recovered,
                # One frame with the whole list; `null` where the policy turns presence off.
                "presence": None if members is None else [member.frame() for member in members],
            }
        )
        for message in [*recovery.messages, *pending]:
            if connection.offer(message):
                metrics.DELIVERED.labels(connection.transport).inc()

    async def unsubscribe(self, connection: Connection, channel: str) -> None:
        if channel in connection.channels:
            self._forget(connection, channel)
            connection.positions.pop(channel, None)

    # -- access-token expiry -----------------------------------------------------------

    def track_expiry(
        self, connection: Connection, expires_at: float, still_valid: StillValid, *, warn: bool
    ) -> None:
        """Arm the connection's one auth timer for a token expiring at `expires_at` (Unix
        seconds): `AUTH_EXPIRING_SECONDS` before it, the session is checked again (a
        signed-out session closes the connection as `session_revoked`) and, with `warn`,
        the client gets `auth_expiring`; at `expires_at` the connection closes as
        `token_expired`. A fresh token (WebSocket re-auth) re-arms it."""
        connection._cancel_auth_timer()
        connection.expires_at = expires_at
        connection._auth_generation += 1
        generation = connection._auth_generation
        delay = max(expires_at - time.time() - AUTH_EXPIRING_SECONDS, 0.0)
        connection._auth_timer = asyncio.get_running_loop().call_later(
            delay, self._auth_expiring, connection, generation, still_valid, warn
        )

    def _auth_expiring(
        self, connection: Connection, generation: int, still_valid: StillValid, warn: bool
    ) -> None:
        expires_at = connection.expires_at
        if connection.closing or expires_at is None:
            return
        connection._auth_timer = asyncio.get_running_loop().call_later(
            max(expires_at - time.time(), 0.0), connection.close, "token_expired"
        )
        self._spawn(self._recheck(connection, generation, still_valid, warn))

    async def _recheck(
        self, connection: Connection, generation: int, still_valid: StillValid, warn: bool
    ) -> None:
        try:
            valid = await still_valid()
        except Exception as exc:  # the token still expires on time; no mass disconnect
            log.warning("realtime_session_check_failed", error=str(exc))
            valid = True
        if connection.closing or connection._auth_generation != generation:
            return  # gone, or re-authenticated meanwhile
        if not valid:
            connection.close("session_revoked")
        elif warn:
            connection.send({"type": "auth_expiring", "expires_at": connection.expires_at_text})

    def resume_token(self, positions: tuple[tuple[str, Position], ...]) -> str:
        # Every subscriber of a one-channel stream gets the same token for a message: it
        # is signed once, not once per connection.
        token = self._token_cache.get(positions)
        if token is None:
            if len(self._token_cache) >= _TOKEN_CACHE_SIZE:
                self._token_cache.clear()
            token = self._token_cache[positions] = self.tokens.encode(dict(positions))
        return token

    # -- delivery --------------------------------------------------------------------

    def _deliver(self, item: Message | PresenceEvent) -> None:
        subscribers = self._subscribers.get(item.channel)
        if not subscribers:
            return
        if isinstance(item, PresenceEvent):
            frame = item.frame()
            for connection in list(subscribers):
                connection.send(frame)
            return
        metrics.DELIVERY_LATENCY.observe(max(time.time() - item.published_at, 0.0))
        frame = item.frame()  # one frame for every subscriber
        delivered: dict[str, int] = {}
        for connection in list(subscribers):
            if connection.offer(item, frame):
                delivered[connection.transport] = delivered.get(connection.transport, 0) + 1
            elif connection.closing:
                # Closed (e.g. too slow) but its transport has not ended yet: stop feeding it.
                metrics.DROPPED.labels(connection.transport, connection.close_reason or "").inc()
                subscribers.discard(connection)
        for transport, count in delivered.items():
            metrics.DELIVERED.labels(transport).inc(count)
        revokes = self.policies.revocation(item.channel)
        if revokes is not None:
            self._revoke(item, revokes)

    def _revoke(self, message: Message, revokes: Revocation) -> None:
        """End the subscriptions the policy says this message revokes; each client got the
        message itself first, then `unsubscribed` with `reason: revoked`."""
        try:
            user_ids = set(revokes(message))
        except Exception:  # a faulty policy must not stop delivery
            log.exception("realtime_revocation_failed", channel=message.channel)
            return
        subscribers = self._subscribers.get(message.channel)
        if not user_ids or not subscribers:
            return
        for connection in list(subscribers):
            if connection.member.user_id in user_ids:
                self._forget(connection, message.channel)
                connection.positions.pop(message.channel, None)
                connection.send(
                    {"type": "unsubscribed", "channel": message.channel, "reason": "revoked"}
                )

    @property
    def connection_count(self) -> int:
        return len(self._connections)

"""An open-loop, fixed-rate HTTP/1.1 load generator (wrk2-style, for latency percentiles).

Request i is due at exactly `start + i / rate`, independent of how fast the server answers.
A due request goes out at once on an idle keep-alive connection, or waits in a backlog
until one is free; either way its latency is measured from its *scheduled* send time, not
from the moment a connection became free. A server stall therefore shows up in the
percentiles as the full wait every request scheduled during it endured, instead of being
hidden by the load generator waiting politely (coordinated omission).

Run it as its own process:

    python bench/openloop.py --url http://127.0.0.1:8000/bare --rate 2000 --duration 10

It prints one JSON object: achieved rate, statuses, errors, p50/p90/p95/p99/p99.9/max in
milliseconds, the dispatch delay (scheduled time to the moment the bytes were written:
waiting for a free connection plus the generator's own lag) and the generator's CPU use,
so a run the generator itself could not keep up with is visible as such.

The connections are asyncio protocols (no task, queue or stream object per request) on
uvloop when it is installed. The scheduler wakes up at most about once a millisecond and
then releases every request already due, so a request can leave up to ~1 ms after its
slot; that delay is counted in its latency (it errs towards reporting more, never less).
Responses must carry Content-Length (chunked bodies count as errors).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from time import perf_counter
from typing import cast
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 5.0
# A request not answered this long after its scheduled time counts as a timeout.
REQUEST_TIMEOUT_S = 10.0
SWEEP_INTERVAL_S = 0.1
MIN_SLEEP_S = 0.001


@dataclass(slots=True)
class Tally:
    latencies_s: list[float] = field(default_factory=list)
    dispatch_delays_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    timeouts: int = 0
    scheduled: int = 0


@dataclass(frozen=True, slots=True)
class Report:
    url: str
    target_rate: float
    duration_s: float
    connections: int
    scheduled: int
    completed: int
    achieved_rate: float
    ok: int
    non_2xx: int
    errors: int
    timeouts: int
    statuses: dict[str, int]
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float
    dispatch_p50_ms: float
    dispatch_p99_ms: float
    dispatch_max_ms: float
    cpu_seconds: float
    cpu_utilisation: float


class ProtocolError(Exception):
    """The server's answer is not an HTTP/1.1 response this generator understands."""


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status, body length and whether the connection stays open, from a response head."""
    status_line, _, header_block = head.partition(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x status line: {status_line!r}")
    status = int(parts[1])
    length = 0
    keep_alive = True
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value.strip())
        elif lowered == b"connection" and value.strip().lower() == b"close":
            keep_alive = False
        elif lowered == b"transfer-encoding":
            raise ProtocolError("chunked responses are not supported")
    return status, length, keep_alive


class Client(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.scheduled: float | None = None  # the in-flight request's scheduled time
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, scheduled: float, now: float) -> None:
        assert self.transport is not None
        self.scheduled = scheduled
        self.pool.tally.dispatch_delays_s.append(now - scheduled)
        self.transport.write(self.pool.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.scheduled is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                status, length, keep_alive = parse_head(bytes(self.buffer[:end]))
            except (ProtocolError, ValueError):
                self.fail(timeout=False)
                return
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            scheduled, self.scheduled = self.scheduled, None
            self.pool.completed(self, scheduled, status)
            if not keep_alive:
                self.abort()
                return
            self.pool.release(self)

    def fail(self, *, timeout: bool) -> None:
        """Count the in-flight request as failed and drop this connection."""
        if self.scheduled is not None:
            if timeout:
                self.pool.tally.timeouts += 1
            else:
                self.pool.tally.errors += 1
            self.scheduled = None
        self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
            self.pool.lost(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.scheduled is not None:
            self.pool.tally.errors += 1
            self.scheduled = None
        if not self.closed:
            self.closed = True
            self.pool.lost(self)


class Pool:
    """The connections, the backlog of due requests, and the tally."""

    def __init__(self, host: str, port: int, request: bytes, size: int) -> None:
        self.host = host
        self.port = port
        self.request = request
        self.size = size
        self.tally = Tally()
        self.idle: deque[Client] = deque()
        self.busy: set[Client] = set()
        self.backlog: deque[float] = deque()
        self.opening = 0
        self.loop = asyncio.get_running_loop()
        # Not loop.time(): uvloop's clock is cached at millisecond resolution.
        self.now: Callable[[], float] = perf_counter
        self.reconnects: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self.opening += 1
        try:
            _, client = await asyncio.wait_for(
                self.loop.create_connection(lambda: Client(self), self.host, self.port),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError):
            self.tally.errors += 1
            return
        finally:
            self.opening -= 1
        self.release(client)

    def dispatch(self, scheduled: float) -> None:
        if self.idle:
            client = self.idle.popleft()
            self.busy.add(client)
            client.send(scheduled, self.now())
        else:
            self.backlog.append(scheduled)

    def release(self, client: Client) -> None:
        self.busy.discard(client)
        if self.backlog:
            self.busy.add(client)
            client.send(self.backlog.popleft(), self.now())
        else:
            self.idle.append(client)

    def completed(self, client: Client, scheduled: float, status: int) -> None:
        self.tally.latencies_s.append(self.now() - scheduled)
        self.tally.statuses[status] = self.tally.statuses.get(status, 0) + 1

    def lost(self, client: Client) -> None:
        self.busy.discard(client)
        if client in self.idle:
            self.idle.remove(client)
        if len(self.busy) + len(self.idle) + self.opening < self.size:
            task = self.loop.create_task(self.open())
            self.reconnects.add(task)
            task.add_done_callback(self.reconnects.discard)

    def sweep(self) -> None:
        """Time out requests that waited, in the backlog or in flight, too long."""
        cutoff = self.now() - REQUEST_TIMEOUT_S
        while self.backlog and self.backlog[0] < cutoff:
            self.backlog.popleft()
            self.tally.timeouts += 1
        for client in list(self.busy):
            if client.scheduled is not None and client.scheduled < cutoff:
                client.fail(timeout=True)

    @property
    def outstanding(self) -> int:
        return len(self.backlog) + sum(1 for client in self.busy if client.scheduled is not None)

    def close(self) -> None:
        for client in [*self.idle, *self.busy]:
            client.closed = True
            if client.transport is not None:
                client.transport.abort()
        for task in self.reconnects:
            task.cancel()


def build_request(url: str, headers: list[str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise SystemExit(f"only plain http:// URLs are supported, not {url!r}")
    port = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {parts.hostname}:{port}",
        "User-Agent: veche-openloop",
        "Accept: */*",
        *headers,
    ]
    return parts.hostname, port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def run(
    url: str, headers: list[str], rate: float, duration: float, connections: int
) -> Report:
    host, port, request = build_request(url, headers)
    pool = Pool(host, port, request, connections)
    await asyncio.gather(*(pool.open() for _ in range(connections)))
    if not pool.idle:
        raise SystemExit(f"could not connect to {host}:{port}")
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    count = int(rate * duration)
    interval = 1.0 / rate
    start = perf_counter() + 0.01
    next_sweep = start + SWEEP_INTERVAL_S
    index = 0
    while index < count:
        now = perf_counter()
        while index < count and start + index * interval <= now:
            pool.dispatch(start + index * interval)
            index += 1
        pool.tally.scheduled = index
        if now >= next_sweep:
            pool.sweep()
            next_sweep = now + SWEEP_INTERVAL_S
        if index < count:
            # Event loop timers are millisecond-grained: sleep at least that long and
            # release everything that fell due meanwhile, instead of spinning.
            await asyncio.sleep(max(MIN_SLEEP_S, start + index * interval - perf_counter()))
    # Bounded: whatever is still outstanding times out REQUEST_TIMEOUT_S after its slot.
    final = perf_counter() + REQUEST_TIMEOUT_S + SWEEP_INTERVAL_S
    while pool.outstanding and perf_counter() < final:
        await asyncio.sleep(SWEEP_INTERVAL_S / 10)
        pool.sweep()
    elapsed = max(perf_counter() - start, 1e-9)
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    pool.close()
    tally = pool.tally
    cpu = (usage_after.ru_utime - usage_before.ru_utime) + (
        usage_after.ru_stime - usage_before.ru_stime
    )
    completed = sum(tally.statuses.values())
    ok = sum(n for status, n in tally.statuses.items() if 200 <= status < 300)
    tally.timeouts += max(0, tally.scheduled - completed - tally.errors - tally.timeouts)
    latencies = sorted(tally.latencies_s)
    delays = sorted(tally.dispatch_delays_s)

    def ms(value: float) -> float:
        return round(value * 1000.0, 3)

    return Report(
        url=url,
        target_rate=rate,
        duration_s=duration,
        connections=connections,
        scheduled=tally.scheduled,
        completed=completed,
        achieved_rate=round(completed / elapsed, 1),
        ok=ok,
        non_2xx=completed - ok,
        errors=tally.errors,
        timeouts=tally.timeouts,
        statuses={str(status): n for status, n in sorted(tally.statuses.items())},
        p50_ms=ms(percentile(latencies, 0.50)),
        p90_ms=ms(percentile(latencies, 0.90)),
        p95_ms=ms(percentile(latencies, 0.95)),
        p99_ms=ms(percentile(latencies, 0.99)),
        p999_ms=ms(percentile(latencies, 0.999)),
        max_ms=ms(latencies[-1] if latencies else 0.0),
        mean_ms=ms(sum(latencies) / len(latencies) if latencies else 0.0),
        dispatch_p50_ms=ms(percentile(delays, 0.50)),
        dispatch_p99_ms=ms(percentile(delays, 0.99)),
        dispatch_max_ms=ms(delays[-1] if delays else 0.0),
        cpu_seconds=round(cpu, 3),
        cpu_utilisation=round(cpu / elapsed, 3),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--url", required=True, help="http://host:port/path to GET")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument(
        "--header", action="append", default=[], help="an extra 'Name: value' request header"
    )
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.connections <= 0:
        parser.error("--rate, --duration and --connections must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the standard loop works, only slower
        runner = asyncio.run
    else:
        runner = uvloop.run
    report = runner(run(args.url, args.header, args.rate, args.duration, args.connections))
    json.dump(asdict(report), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

"""Realtime fan-out benchmark: publish -> receive latency over SSE and NDJSON.

    .venv/bin/python bench/realtime_fanout.py [--connections 1000] [--duration 15]
        [--interval 0.1] [--transport sse|ndjson|both] [--repetitions 3] [--no-pin]
        [--scenarios one many] [--no-gc-tuning]

The driver migrates a fresh SQLite database and, for every measured run, starts a fresh
uvicorn server (the kernel plus `bench/bench_app`, through `bench/bench_server.py`; one
worker, no access log, role `api`, `VECHE_REALTIME__QUEUE_SIZE` from `--queue-size`) on a
free 127.0.0.1 port, and logs one user in. For each scenario

- `one`: all connections subscribe to the one channel `bench:all`, and each tick publishes
  one message there (fan-out 1 -> N);
- `many`: connection *i* subscribes to `bench:c{i}`, and each tick publishes one message on
  each of the N channels (N publishes, one receiver each),

and each transport, a separate load process (`--role load`) opens the N streams with raw
asyncio sockets and waits for every `subscribed` frame. It then publishes unrecorded
warm-up ticks every 0.5 s until every stream has the latest one (the joins queue presence
frames ahead of any message), and then POSTs `/api/v1/bench/publish` every `--interval`
seconds for `--duration` seconds. The route stamps `time.time_ns()` into each message just
before `kernel.realtime.publish`; a receiver's latency is its receive time (when the chunk
was read off the socket) minus that stamp (same machine clock).

The in-process baseline (`--role baseline`, same run, same schedule and warm-up) attaches
the same N subscribers straight to a `Hub` with the in-memory backend, in one process with
no HTTP, and measures publish -> dequeue latency.

With two or more CPUs the server (and the baseline) run on the last CPU and the load
process on the first (`taskset`). Everything is bounded in time and uses loopback only.
Writes JSON to `bench/results/` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from common import BENCH, HOST, PASSWORD, RESULTS, VENV_BIN, free_port, log

EMAIL = "fanout@example.com"
TARGET_P99_MS = 100.0
PATHS = {"sse": "/api/v1/realtime/sse", "ndjson": "/api/v1/realtime/stream"}
SERVER_ENV = {
    "VECHE_RATE_LIMITS": json.dumps({"default": "100000000/minute", "auth": "100000/minute"}),
    "VECHE_ACCESS_LOG": "false",
    "VECHE_LOG_LEVEL": "warning",
    "VECHE_ENV": "dev",
    "VECHE_ROLE": "api",
    "VECHE_AUTH__ACCESS_TOKEN_TTL_SECONDS": "7200",
}


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def channels_for(scenario: str, count: int) -> list[str]:
    return ["bench:all"] * count if scenario == "one" else [f"bench:c{i}" for i in range(count)]


@dataclass(slots=True)
class Stats:
    """One measured run (load or baseline)."""

    kind: str
    scenario: str
    transport: str
    connections: int
    subscribed: int = 0
    ticks: int = 0
    expected: int = 0
    delivered: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    ended_early: int = 0
    reconnect_frames: int = 0
    setup_s: float = 0.0
    cpu_percent: float = 0.0
    notes: list[str] = field(default_factory=list)


def summarize(stats: Stats, latencies_ns: list[int]) -> None:
    stats.delivered = len(latencies_ns)
    if not latencies_ns:
        return
    ordered = sorted(latencies_ns)

    def pick(fraction: float) -> float:
        index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return round(ordered[index] / 1e6, 2)

    stats.p50_ms, stats.p95_ms, stats.p99_ms = pick(0.50), pick(0.95), pick(0.99)
    stats.max_ms = round(ordered[-1] / 1e6, 2)


# -- load process: N streams over raw asyncio sockets ---------------------------------------


@dataclass(slots=True)
class Stream:
    index: int
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    frames: int = 0
    ended: bool = False
    reconnects: int = 0
    last_seq: int = -1


class Receiver:
    def __init__(self, transport: str, latencies: list[int]) -> None:
        self.transport = transport
        self.latencies = latencies
        self.recording = False
        self.last_frame = time.monotonic()

    def handle(self, stream: Stream, line: bytes, now_ns: int) -> None:
        if self.transport == "sse":
            if not line.startswith(b"data:"):
                return
            line = line[5:]
        elif not line.strip():
            return
        frame = orjson.loads(line)
        stream.frames += 1
        self.last_frame = time.monotonic()
        kind = frame.get("type")
        if kind == "message":
            stream.last_seq = int(frame["data"]["s"])
            if self.recording:
                self.latencies.append(now_ns - int(frame["data"]["t"]))
        elif kind == "subscribed":
            stream.subscribed.set()
        elif kind == "reconnect":
            stream.reconnects += 1

    async def run(
        self, stream: Stream, port: int, token: str, channel: str, opened: asyncio.Queue[bool]
    ) -> None:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            stream.ended = True
            await opened.put(False)
            return
        try:
            writer.write(
                (
                    f"GET {PATHS[self.transport]}?channel={channel} HTTP/1.1\r\n"
                    f"Host: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"
                    "Accept: text/event-stream, application/x-ndjson\r\n\r\n"
                ).encode()
            )
            status = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip().lower()
            ok = b" 200 " in status
            await opened.put(ok)
            if not ok:
                stream.ended = True
                return
            chunked = headers.get("transfer-encoding") == "chunked"
            pending = b""
            while True:
                if chunked:
                    size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        break
                    data = (await reader.readexactly(size + 2))[:-2]
                else:
                    data = await reader.read(65536)
                    if not data:
                        break
                now = time.time_ns()
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self.handle(stream, line.rstrip(b"\r"), now)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            stream.ended = True
            writer.close()


async def post_publish(
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter], port: int, query: str
) -> None:
    reader, writer = streams
    writer.write(
        f"POST /api/v1/bench/publish?{query} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Content-Length: 0\r\n\r\n".encode()
    )
    status = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    if b" 200 " not in status:
        raise RuntimeError(f"publish answered {status!r}")


async def load(args: argparse.Namespace) -> Stats:  # noqa: PLR0915
    stats = Stats("http", args.scenario, args.transport, args.connections)
    latencies: list[int] = []
    receiver = Receiver(args.transport, latencies)
    streams = [Stream(i) for i in range(args.connections)]
    channels = channels_for(args.scenario, args.connections)
    opened: asyncio.Queue[bool] = asyncio.Queue()
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    # Open in waves so the accept backlog and the join presence storm stay bounded.
    for begin in range(0, args.connections, 50):
        for stream in streams[begin : begin + 50]:
            tasks.append(
                asyncio.create_task(
                    receiver.run(stream, args.port, args.token, channels[stream.index], opened)
                )
            )
        for _ in streams[begin : begin + 50]:
            if not await asyncio.wait_for(opened.get(), 120):
                stats.notes.append("a stream was refused")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(stream.subscribed.wait() for stream in streams)), 120
        )
    stats.subscribed = sum(stream.subscribed.is_set() for stream in streams)
    stats.setup_s = round(time.monotonic() - started, 2)
    alive = sum(not stream.ended for stream in streams)
    log(f"load: {stats.subscribed} subscribed, {alive} open after {stats.setup_s} s")

    publisher = await asyncio.open_connection(HOST, args.port)
    query = f"mode={args.scenario}&n={args.connections}"
    # Warm-up: the joins queued presence frames ahead of any message; publish unrecorded
    # ticks every 0.5 s until every open stream got the latest one (at most 120 s).
    warmup = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        await asyncio.wait_for(post_publish(publisher, args.port, f"{query}&seq={warmup}"), 30)
        await asyncio.sleep(0.5)
        if all(stream.ended or stream.last_seq == warmup for stream in streams):
            break
        warmup += 1
    stats.notes.append(f"warm-up ticks: {warmup + 1}")
    await asyncio.sleep(0.5)
    receiver.recording = True
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    begin_at = time.monotonic()
    ticks = round(args.duration / args.interval)
    for tick in range(ticks):
        delay = begin_at + tick * args.interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        seq = 1_000_000 + tick
        await asyncio.wait_for(post_publish(publisher, args.port, f"{query}&seq={seq}"), 30)
        stats.ticks += 1
    expected = stats.ticks * alive
    deadline = time.monotonic() + 10
    while len(latencies) < expected and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    stats.cpu_percent = round(100 * (cpu_seconds() - cpu0) / (time.monotonic() - wall0), 1)
    receiver.recording = False
    stats.expected = stats.ticks * args.connections
    stats.ended_early = sum(stream.ended for stream in streams)
    stats.reconnect_frames = sum(stream.reconnects for stream in streams)
    publisher[1].close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    summarize(stats, latencies)
    return stats


# -- baseline process: the same subscribers on an in-process Hub ----------------------------


async def baseline(args: argparse.Namespace) -> Stats:  # noqa: PLR0915
    sys.path.insert(0, str(BENCH))
    from bench_app import module as bench_module
    from veche.kernel.collector import tune_collector
    from veche.kernel.db import new_id
    from veche.kernel.identity.models import User
    from veche.kernel.realtime import Hub
    from veche.kernel.realtime.connection import CLOSED, Connection, Outgoing
    from veche.settings import load_settings

    stats = Stats("in-process", args.scenario, "hub", args.connections)
    settings = load_settings()
    hub = Hub.from_settings(settings, b"b" * 32)
    hub.policies.register_all(bench_module.channel_policies, owner="app 'bench'")
    await hub.start()
    latencies: list[int] = []
    recording = False
    user = User(id=new_id(), email=EMAIL, display_name="Bench", role="user", is_active=True)

    last_seq = [-1] * args.connections

    async def drain(connection: Connection, index: int) -> None:
        while True:
            item = await connection.next()
            now = time.time_ns()
            if item is CLOSED:
                stats.ended_early += 1
                return
            if isinstance(item, Outgoing) and item.frame.get("type") == "message":
                last_seq[index] = int(item.frame["data"]["s"])
                if recording:
                    latencies.append(now - int(item.frame["data"]["t"]))

    started = time.monotonic()
    channels = channels_for(args.scenario, args.connections)
    tasks = []
    for index in range(args.connections):
        connection = hub.open(user, "sse")
        tasks.append(asyncio.create_task(drain(connection, index)))
        await hub.subscribe(connection, channels[index])
        await asyncio.sleep(0)
    stats.subscribed = args.connections
    if settings.gc_tuning:  # as the server's lifespan does once it has started
        tune_collector(settings)
    # Warm-up, as in the load: until every subscriber got the latest unrecorded tick.
    warm = 0
    deadline = time.monotonic() + 120
    targets = ["bench:all"] if args.scenario == "one" else channels
    while time.monotonic() < deadline:
        for channel in targets:
            await hub.publish(channel, {"t": time.time_ns(), "s": warm}, event="tick")
        await asyncio.sleep(0.5)
        if min(last_seq) == warm:
            break
        warm += 1
    stats.notes.append(f"warm-up ticks: {warm + 1}")
    stats.setup_s = round(time.monotonic() - started, 2)
    recording = True
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    ticks = round(args.duration / args.interval)
    for tick in range(ticks):
        delay = wall0 + tick * args.interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for channel in targets:
            await hub.publish(channel, {"t": time.time_ns(), "s": 1_000_000 + tick}, event="tick")
        stats.ticks += 1
    stats.expected = stats.ticks * args.connections
    deadline = time.monotonic() + 10
    while len(latencies) < stats.expected and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    stats.cpu_percent = round(100 * (cpu_seconds() - cpu0) / (time.monotonic() - wall0), 1)
    recording = False
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await hub.stop()
    summarize(stats, latencies)
    return stats


# -- driver ---------------------------------------------------------------------------------


def pinning(enabled: bool) -> tuple[list[str], list[str]]:
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2 or shutil.which("taskset") is None:
        return [], []
    return ["taskset", "-c", str(cpus[-1])], ["taskset", "-c", str(cpus[0])]


def request(port: int, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(method, path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data: dict[str, Any] = json.loads(response.read() or b"{}")
    finally:
        conn.close()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path} answered {response.status}: {data}")
    return data


@contextlib.contextmanager
def server(env: dict[str, str], workdir: Path, prefix: list[str]) -> Iterator[int]:
    port = free_port()
    log_path = workdir / "server.log"
    command = [
        *prefix,
        sys.executable,
        "-m",
        "uvicorn",
        "bench_server:create_app",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
        "--no-server-header",
        "--timeout-graceful-shutdown",
        "5",
        "--backlog",
        "4096",
    ]
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection(HOST, port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            time.sleep(0.2)
        yield port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def run_role(prefix: list[str], env: dict[str, str], arguments: list[str]) -> Stats:
    command = [*prefix, sys.executable, str(Path(__file__).resolve()), *arguments]
    result = subprocess.run(
        command, check=False, env=env, capture_output=True, text=True, timeout=420
    )
    sys.stderr.write(result.stderr[-3000:])
    if result.returncode != 0:
        raise RuntimeError(f"{arguments[:2]} failed with {result.returncode}")
    return Stats(**json.loads(result.stdout.strip().splitlines()[-1]))


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | path | delivered / expected | p50 ms | p95 ms | p99 ms | max ms "
        "| ended early | generator CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['scenario']} | {row['path']} | {row['delivered']} / {row['expected']} "
            f"| {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['p99_ms']:.1f} "
            f"| {row['max_ms']:.1f} | {row['ended_early']} | {row['cpu_percent']:.0f}% |"
        )
    return "\n".join(lines)


def median_row(runs: list[Stats], path: str) -> dict[str, Any]:
    def med(name: str) -> float:
        return float(statistics.median(getattr(run, name) for run in runs))

    return {
        "scenario": runs[0].scenario,
        "path": path,
        "delivered": int(med("delivered")),
        "expected": int(med("expected")),
        "p50_ms": med("p50_ms"),
        "p95_ms": med("p95_ms"),
        "p99_ms": med("p99_ms"),
        "max_ms": med("max_ms"),
        "ended_early": int(med("ended_early")),
        "cpu_percent": med("cpu_percent"),
    }


def drive(args: argparse.Namespace) -> None:
    server_prefix, client_prefix = pinning(not args.no_pin)
    transports = ["sse", "ndjson"] if args.transport == "both" else [args.transport]
    common = [
        "--connections",
        str(args.connections),
        "--duration",
        str(args.duration),
        "--interval",
        str(args.interval),
    ]
    runs: dict[str, list[Stats]] = {}
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"realtime_fanout-{stamp}.json"

    def save() -> None:  # after every run, so an interrupted run keeps what it measured
        found = {key: [asdict(run) for run in value] for key, value in runs.items()}
        out.write_text(json.dumps({"args": vars(args), "runs": found}, indent=2))

    with tempfile.TemporaryDirectory(prefix="veche-fanout-") as tmp:
        workdir = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VECHE_")}
        env.update(SERVER_ENV)
        env["VECHE_DATA_DIR"] = str(workdir)
        env["VECHE_REALTIME__QUEUE_SIZE"] = str(args.queue_size)
        env["VECHE_GC_TUNING"] = "false" if args.no_gc_tuning else "true"
        env["PYTHONPATH"] = os.pathsep.join([str(BENCH), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        subprocess.run(
            [str(VENV_BIN / "veche"), "migrate"], env=env, cwd=workdir, check=True, timeout=120
        )
        registered = False
        for repetition in range(args.repetitions):
            for scenario in args.scenarios:
                log(f"rep {repetition + 1}: {scenario}, in-process baseline")
                runs.setdefault(f"{scenario}/hub", []).append(
                    run_role(
                        server_prefix, env, ["--role", "baseline", "--scenario", scenario, *common]
                    )
                )
                save()
                for transport in transports:
                    # A fresh server per run: no leftovers (leaves, presence) from the last one.
                    with server(env, workdir, server_prefix) as port:
                        if not registered:
                            request(
                                port,
                                "POST",
                                "/api/v1/auth/register",
                                {"email": EMAIL, "password": PASSWORD, "display_name": "Bench"},
                            )
                            registered = True
                        login = {"email": EMAIL, "password": PASSWORD}
                        token = request(port, "POST", "/api/v1/auth/login", login)["access_token"]
                        log(f"rep {repetition + 1}: {scenario}, {transport}")
                        arguments = ["--role", "load", "--scenario", scenario]
                        arguments += ["--transport", transport, "--port", str(port)]
                        runs.setdefault(f"{scenario}/{transport}", []).append(
                            run_role(client_prefix, env, [*arguments, "--token", token, *common])
                        )
                        save()
    labels = {"hub": "in-process hub (baseline)", "sse": "SSE", "ndjson": "NDJSON"}
    rows = [median_row(found, labels[key.split("/")[1]]) for key, found in runs.items()]
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "runs": {key: [asdict(run) for run in found] for key, found in runs.items()},
                "medians": rows,
                "target_p99_ms": TARGET_P99_MS,
            },
            indent=2,
        )
    )
    print(table(rows))
    for row in rows:
        if row["path"] in ("SSE", "NDJSON"):
            verdict = "met" if row["p99_ms"] < TARGET_P99_MS else "MISSED"
            print(f"- {row['scenario']} {row['path']}: p99 {row['p99_ms']:.1f} ms -> {verdict}")
    log(f"raw results: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=["driver", "load", "baseline"], default="driver")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of publishing")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between ticks")
    parser.add_argument("--transport", choices=["sse", "ndjson", "both"], default="both")
    parser.add_argument("--scenario", choices=["one", "many"], default="one")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=["one", "many"],
        default=["one", "many"],
        help="scenarios the driver runs",
    )
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument(
        "--no-gc-tuning",
        action="store_true",
        help="VECHE_GC_TUNING=false for the server and the baseline (the collector's defaults)",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=2048,
        help="VECHE_REALTIME__QUEUE_SIZE for the server and the baseline (kernel default 256)",
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="")
    args = parser.parse_args()
    if args.role == "driver":
        drive(args)
        return
    raise_fd_limit()
    import uvloop

    runner = load if args.role == "load" else baseline
    stats = uvloop.run(asyncio.wait_for(runner(args), 360))
    print(json.dumps(asdict(stats)))


if __name__ == "__main__":
    main()

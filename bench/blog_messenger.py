"""Blog messenger benchmark: messages sent and delivered per second over the WebSocket, and
the delivery latency, with 500 connected users, against a bare realtime channel in the
same run.

    .venv/bin/python bench/blog_messenger.py [--database sqlite|postgresql|both]
        [--users 500] [--rates 50 100 200] [--duration 15] [--repetitions 3] [--no-pin]

Target: p99 delivery latency under 100 ms. For each database it migrates a clean database
(PostgreSQL: its own database, `bench_messenger`) and starts one server as a subprocess on
a free loopback port: the blog app plus `bench/bench_app` (for the baseline's `benchroom:`
channels), built like `veche serve` builds its app and run with the same uvicorn options
(this script's `serve` command; the bench app without its event consumer), pinned to the
last CPU. The server runs role `all`, so the
blog's event consumers (the `/me` cache renewal a `blog.message.sent` causes) run in it,
as in a single-process deployment.

Setup, not measured: the users are registered and signed in through the API with argon2
lowered to its minimum cost for this server (8 MiB, one pass; password hashing is not what
is measured), and put in conversations through the API: consecutive users form direct
pairs (users/2 of them) and groups of `--group-size` (10). A load process (pinned to the
first CPU, uvloop and the `websockets` client) opens one WebSocket per user
(`/api/v1/realtime/ws`, the auth frame) and subscribes each to its two conversations'
`conversation:{id}` channels, and to the two `benchroom:` channels standing for them.

Then, per repetition and rate, alternating (baseline first):

- **baseline**: `publish` frames on the `benchroom:` channels: the hub publishes them as
  they come (no handler, no database) and pushes them to every subscriber;
- **messenger**: `message.send` frames on the `conversation:` channels, which the blog's
  `receive` handler takes: membership check (the policy's `audience`, then the service),
  rate limit, the insert with the next `seq`, the read position, the `blog.message.sent`
  event, the commit, the reply, and after the commit the `message.created` push to the
  channel (and `blog.message` to each other member's `user:` channel, not subscribed here).

Both send at a fixed open-loop rate: message i is due at `start + i / rate`, whatever the
answers, alternating between a direct conversation and a group (so half the messages reach
2 members and half reach 10), each from the next member of its conversation. The body
carries the message's scheduled send time (`time.time_ns()` on this machine's clock); a
member's delivery latency is when its connection read the `message.created` (or baseline)
frame minus that stamp, so a stall in the server or the generator counts in full. The
sender's own connection is a member and counts as a delivery too. Reported per run:
messages sent (acknowledged) per second, deliveries per second, delivery p50/p95/p99/max,
the reply latency, errors and deliveries missing 30 s after the last send; before each
run it waits until the event consumers' lag (`/metrics`) is zero, so a saturated run's
backlog does not load the next; medians over
the repetitions. Prints a Markdown table and writes the raw results as JSON to
`bench/results/`.

`--role api` runs the server without the event consumers (for comparison; production runs
them in workers). Development aids for the server: `BENCH_COUNT_SQL=<file>` writes every
SQL statement it ran with its count, `BENCH_PROFILE=<file>` a cProfile dump (greenlets
blur its attribution) when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import BENCH, HOST, PASSWORD, PG_ADMIN, free_port, log, write_results
from me_vs_bare import SERVER_ENV, Pinning, Server, choose_pinning, migrate, wait_ready

PG_MESSENGER_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/bench_messenger"
TARGET_P99_MS = 100.0
# How long after the last send a run waits for replies and deliveries still due.
DRAIN_SECONDS = 30.0
WS_PATH = "/api/v1/realtime/ws"
API = "/api/v1"
MESSENGER_ENV = {
    **SERVER_ENV,
    "VECHE_APPS": "blog",
    "VECHE_ROLE": "all",
    # Setup only: 1,000 password hashes and checks at the default cost would take minutes.
    "VECHE_AUTH__ARGON2_MEMORY_KIB": "8192",
    "VECHE_AUTH__ARGON2_TIME_COST": "1",
    # The limits stay in the path (each send is counted) but far above what is sent.
    "VECHE_RATE_LIMITS": json.dumps(
        {
            "default": "100000000/minute",
            "auth": "100000000/minute",
            "blog_write": "100000000/minute",
            "blog_messages": "100000000/minute",
            "blog_signals": "100000000/minute",
        }
    ),
    # The AI recommender is irrelevant to messages; keep the local embedder out of the run.
    "VECHE_BLOG__SUGGESTIONS_ENABLED": "false",
}


# -- the server (`serve`): the blog app plus the bench app, as `veche serve` runs it ------


def create_app() -> Any:
    import dataclasses

    from bench_app import module as bench_module
    from veche.kernel import build_app
    from veche.registry import load_modules
    from veche.settings import load_settings

    settings = load_settings()
    # Only the bench app's channels: its event consumer would wake on every committed
    # message like the blog's own consumers and add its cost to the messenger's.
    channels_only = dataclasses.replace(bench_module, consumers=())
    return build_app(settings, [*load_modules(settings.apps), channels_only])


def serve(port: int) -> None:
    import uvicorn

    profile_path = os.environ.get("BENCH_PROFILE")
    if profile_path:  # development aid: where the server's time goes, as cProfile sees it
        import atexit
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        atexit.register(lambda: (profiler.disable(), profiler.dump_stats(profile_path)))
    statements_path = os.environ.get("BENCH_COUNT_SQL")
    if statements_path:  # development aid: every SQL statement the server ran, counted
        import atexit
        import collections

        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        counts: collections.Counter[str] = collections.Counter()

        def count(*arguments: Any) -> None:
            counts[" ".join(str(arguments[2]).split())[:160]] += 1

        event.listen(Engine, "before_cursor_execute", count)
        atexit.register(
            lambda: Path(statements_path).write_text(
                "\n".join(f"{n}\t{text}" for text, n in counts.most_common()), encoding="utf-8"
            )
        )

    # The options `veche serve` passes to uvicorn.run (src/veche/cli.py), plus a backlog
    # that takes the connection waves.
    uvicorn.run(
        create_app,
        factory=True,
        host=HOST,
        port=port,
        workers=1,
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,
        backlog=4096,
    )


@contextlib.contextmanager
def server(env: dict[str, str], workdir: Path, pinning: Pinning) -> Iterator[Server]:
    port = free_port()
    log_path = workdir / "server.log"
    command = [
        *pinning.prefix(pinning.server),
        sys.executable,
        str(BENCH / "blog_messenger.py"),
        "serve",
        "--port",
        str(port),
    ]
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    running = Server(name="veche", port=port, process=process, log_path=log_path)
    try:
        wait_ready(running, "/health", timeout=60)
        yield running
    finally:
        running.stop()


# -- setup over HTTP (driver process) -------------------------------------------------------


async def setup_users(port: int, users: int, group_size: int) -> dict[str, Any]:
    """Register and sign in `users` users, then make the direct pairs and the groups."""
    import httpx

    base = f"http://{HOST}:{port}"
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def sign_up(index: int) -> dict[str, str]:
            email = f"chat{index}@example.com"
            async with gate:
                registered = await client.post(
                    f"{API}/auth/register",
                    json={"email": email, "password": PASSWORD, "display_name": f"Chat {index}"},
                )
                if registered.status_code != 201:
                    raise RuntimeError(f"register answered {registered.status_code}")
                login = await client.post(
                    f"{API}/auth/login", json={"email": email, "password": PASSWORD}
                )
                if login.status_code != 200:
                    raise RuntimeError(f"login answered {login.status_code}")
            return {"id": registered.json()["id"], "token": login.json()["access_token"]}

        started = time.monotonic()
        people = await asyncio.gather(*(sign_up(index) for index in range(users)))
        log(f"{users} users signed in in {time.monotonic() - started:.1f} s")

        async def converse(owner: int, others: list[int], kind: str) -> dict[str, Any]:
            body: dict[str, Any] = {"kind": kind, "member_ids": [people[i]["id"] for i in others]}
            if kind == "group":
                body["title"] = f"Group of {owner}"
            headers = {"Authorization": f"Bearer {people[owner]['token']}"}
            async with gate:
                answer = await client.post(f"{API}/blog/conversations", json=body, headers=headers)
            if answer.status_code != 201:
                raise RuntimeError(f"creating a conversation answered {answer.status_code}")
            return {"id": answer.json()["id"], "kind": kind, "members": [owner, *others]}

        pairs = [converse(i, [i + 1], "direct") for i in range(0, users - 1, 2)]
        groups = [
            converse(i, list(range(i + 1, i + group_size)), "group")
            for i in range(0, users - group_size + 1, group_size)
        ]
        conversations = await asyncio.gather(*pairs, *groups)
    return {"users": people, "conversations": conversations}


# -- the load process: N WebSockets ---------------------------------------------------------


@dataclass(slots=True)
class Run:
    kind: str  # "baseline" or "messenger"
    rate: float
    repetition: int
    duration: float
    scheduled: int = 0
    sent: int = 0
    acked: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    expected: int = 0
    delivered: int = 0
    missing: int = 0
    send_seconds: float = 0.0
    sent_per_s: float = 0.0
    delivered_per_s: float = 0.0
    send_lag_max_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    direct_p99_ms: float = 0.0
    group_p99_ms: float = 0.0
    reply_p50_ms: float = 0.0
    reply_p99_ms: float = 0.0
    generator_cpu_percent: float = 0.0
    consumers_idle_after_s: float = 0.0


def consumer_lag(port: int) -> int:
    """The events the server's consumers have not handled yet (`/metrics`)."""
    import urllib.request

    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("veche_events_consumer_lag{")
    )


async def wait_for_idle_consumers(port: int, limit_seconds: float = 180.0) -> float:
    """Wait until the event consumers have worked through what earlier runs queued (a
    saturated run leaves a backlog that would otherwise load the next one); returns the
    seconds waited."""
    started = time.monotonic()
    idle = 0
    while time.monotonic() - started < limit_seconds:
        idle = idle + 1 if await asyncio.to_thread(consumer_lag, port) == 0 else 0
        if idle >= 2:
            break
        await asyncio.sleep(1.0)
    return round(time.monotonic() - started, 1)


def percentile_ms(ordered_ns: list[int], fraction: float) -> float:
    if not ordered_ns:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered_ns)))
    return round(ordered_ns[min(rank, len(ordered_ns)) - 1] / 1e6, 2)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Recorder:
    """What every connection read, keyed by the tag of the run it belongs to."""

    def __init__(self) -> None:
        self.tag = ""
        self.latencies: dict[str, list[int]] = {"direct": [], "group": []}
        self.replies: dict[int, int] = {}  # ref -> scheduled ns, while waiting
        self.reply_latencies: list[int] = []
        self.acked = 0
        self.last_ack_ns = 0
        self.last_delivery_ns = 0
        self.errors: dict[str, int] = {}
        self.subscribed: dict[int, set[str]] = {}
        self.ready: dict[int, asyncio.Event] = {}

    def start(self, tag: str) -> None:
        self.tag = tag
        self.latencies = {"direct": [], "group": []}
        self.replies = {}
        self.reply_latencies = []
        self.acked = 0
        self.last_ack_ns = 0
        self.last_delivery_ns = 0
        self.errors = {}

    def delivered(self) -> int:
        return sum(len(values) for values in self.latencies.values())

    def handle(self, index: int, raw: str | bytes, now_ns: int) -> None:
        import orjson

        frame = orjson.loads(raw)
        kind = frame.get("type")
        if kind == "message":
            data = frame.get("data")
            body = data.get("body") if isinstance(data, dict) else None
            if isinstance(body, str) and body.startswith(self.tag + " ") and self.tag:
                # "<tag> <conversation kind> <message number> <scheduled ns>"
                _, conversation_kind, _, stamp = body.split(" ", 3)
                self.latencies[conversation_kind].append(now_ns - int(stamp))
                self.last_delivery_ns = now_ns
        elif kind in ("reply", "published"):
            scheduled = self.replies.pop(frame.get("ref"), None)
            if scheduled is not None:
                self.acked += 1
                self.last_ack_ns = now_ns
                self.reply_latencies.append(now_ns - scheduled)
        elif kind == "subscribed":
            channels = self.subscribed.setdefault(index, set())
            channels.add(frame["channel"])
            if len(channels) == 4:
                self.ready[index].set()
        elif kind == "error":
            code = str(frame.get("code"))
            self.errors[code] = self.errors.get(code, 0) + 1
            self.replies.pop(frame.get("ref"), None)
        elif kind in ("reconnect", "reauth"):
            self.errors[f"{kind}:{frame.get('reason')}"] = (
                self.errors.get(f"{kind}:{frame.get('reason')}", 0) + 1
            )


async def load(args: argparse.Namespace) -> list[Run]:  # noqa: PLR0915
    from websockets.asyncio.client import ClientConnection, connect

    setup = json.loads(await asyncio.to_thread(Path(args.setup).read_text, encoding="utf-8"))
    users, conversations = setup["users"], setup["conversations"]
    channels: dict[int, list[str]] = {i: [] for i in range(len(users))}
    for number, conversation in enumerate(conversations):
        conversation["channel"] = f"conversation:{conversation['id']}"
        conversation["room"] = f"benchroom:{conversation['kind']}{number}"
        for member in conversation["members"]:
            channels[member] += [conversation["channel"], conversation["room"]]
    recorder = Recorder()
    sockets: dict[int, ClientConnection] = {}
    readers: list[asyncio.Task[None]] = []
    closed: list[str] = []

    async def read(index: int, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                recorder.handle(index, raw, time.time_ns())
        except Exception as exc:  # a closed socket ends the reader; counted below
            closed.append(f"{index}: {exc!r}")
        else:
            closed.append(f"{index}: closed {ws.close_code}")

    async def open_one(index: int) -> None:
        ws = await connect(
            f"ws://{HOST}:{args.port}{WS_PATH}", max_queue=None, open_timeout=60, ping_interval=None
        )
        await ws.send(json.dumps({"type": "auth", "token": users[index]["token"]}))
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"auth answered {welcome}")
        sockets[index] = ws
        recorder.ready[index] = asyncio.Event()
        readers.append(asyncio.create_task(read(index, ws)))
        for channel in channels[index]:
            await ws.send(json.dumps({"type": "subscribe", "channel": channel}))

    started = time.monotonic()
    for begin in range(0, len(users), 50):
        await asyncio.gather(*(open_one(i) for i in range(begin, min(begin + 50, len(users)))))
    await asyncio.wait_for(
        asyncio.gather(*(event.wait() for event in recorder.ready.values())), 120
    )
    log(
        f"load: {len(sockets)} connections, {4 * len(sockets)} subscriptions in "
        f"{time.monotonic() - started:.1f} s"
    )
    direct = [c for c in conversations if c["kind"] == "direct"]
    group = [c for c in conversations if c["kind"] == "group"]
    ref_counter = 0

    async def send_run(run: Run, tag: str) -> None:  # noqa: PLR0915
        """Send at the run's rate for its duration; message i is due at start + i / rate."""
        nonlocal ref_counter
        run.consumers_idle_after_s = await wait_for_idle_consumers(args.port)
        recorder.start(tag)
        count = round(run.rate * run.duration)
        start_ns = time.time_ns() + 50_000_000
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        lag_max = 0
        for number in range(count):
            due_ns = start_ns + round(number * 1e9 / run.rate)
            delay = (due_ns - time.time_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            lag_max = max(lag_max, time.time_ns() - due_ns)
            pool = direct if number % 2 == 0 else group
            turn = number // 2
            conversation = pool[turn % len(pool)]
            members = conversation["members"]
            sender = members[(turn // len(pool)) % len(members)]
            body = f"{tag} {conversation['kind']} {number} {due_ns}"
            ref_counter += 1
            recorder.replies[ref_counter] = due_ns
            if run.kind == "messenger":
                frame = {
                    "type": "publish",
                    "channel": conversation["channel"],
                    "event": "message.send",
                    "data": {"body": body, "client_id": f"{tag}-{number}"},
                    "ref": ref_counter,
                }
            else:
                frame = {
                    "type": "publish",
                    "channel": conversation["room"],
                    "event": "message.created",
                    "data": {"body": body, "client_id": f"{tag}-{number}"},
                    "ref": ref_counter,
                }
            run.scheduled += 1
            try:
                await sockets[sender].send(json.dumps(frame))
                run.sent += 1
            except Exception:
                recorder.errors["send_failed"] = recorder.errors.get("send_failed", 0) + 1
            run.expected += len(members)
        run.send_seconds = round((time.time_ns() - start_ns) / 1e9, 3)
        # A server that fell behind works through its backlog before the next run starts.
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline and (  # noqa: ASYNC110
            recorder.delivered() < run.expected or recorder.replies
        ):
            await asyncio.sleep(0.05)
        run.generator_cpu_percent = round(
            100 * (cpu_seconds() - cpu0) / (time.monotonic() - wall0), 1
        )
        run.send_lag_max_ms = round(lag_max / 1e6, 2)
        run.acked = recorder.acked
        run.errors = dict(recorder.errors)
        run.delivered = recorder.delivered()
        run.missing = max(0, run.expected - run.delivered)
        # Rates from the first scheduled send to the last reply / delivery: what the server
        # got through, below the offered rate when it fell behind.
        run.sent_per_s = round(run.acked * 1e9 / max(1, recorder.last_ack_ns - start_ns), 1)
        run.delivered_per_s = round(
            run.delivered * 1e9 / max(1, recorder.last_delivery_ns - start_ns), 1
        )
        everything = sorted(recorder.latencies["direct"] + recorder.latencies["group"])
        run.p50_ms = percentile_ms(everything, 0.50)
        run.p95_ms = percentile_ms(everything, 0.95)
        run.p99_ms = percentile_ms(everything, 0.99)
        run.max_ms = round(everything[-1] / 1e6, 2) if everything else 0.0
        run.direct_p99_ms = percentile_ms(sorted(recorder.latencies["direct"]), 0.99)
        run.group_p99_ms = percentile_ms(sorted(recorder.latencies["group"]), 0.99)
        replies = sorted(recorder.reply_latencies)
        run.reply_p50_ms = percentile_ms(replies, 0.50)
        run.reply_p99_ms = percentile_ms(replies, 0.99)
        recorder.tag = ""

    # Warm-up, unrecorded: both paths at the lowest rate.
    for kind in ("baseline", "messenger"):
        await send_run(Run(kind, min(args.rates), 0, args.warmup), f"w{kind[0]}")
        await asyncio.sleep(1)
    runs: list[Run] = []
    for repetition in range(1, args.repetitions + 1):
        for rate in args.rates:
            for kind in ("baseline", "messenger"):
                run = Run(kind, rate, repetition, args.duration)
                await send_run(run, f"r{repetition}{kind[0]}{int(rate)}")
                runs.append(run)
                log(
                    f"load: rep {repetition} {kind} at {rate:g}/s: sent {run.sent_per_s}/s, "
                    f"delivered {run.delivered_per_s}/s, p50 {run.p50_ms} p99 {run.p99_ms} "
                    f"ms, missing {run.missing}, errors {run.errors}"
                )
                await asyncio.sleep(1)
    if closed:
        log(f"load: {len(closed)} connections ended early, e.g. {closed[:3]}")
    for ws in sockets.values():
        await ws.close()
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return runs


# -- the driver -----------------------------------------------------------------------------


def reset_messenger_database() -> None:
    def psql(sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [*PG_ADMIN, "-d", database, "-tA", "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stdout.strip()

    if psql("SELECT 1 FROM pg_database WHERE datname = 'bench_messenger'") != "1":
        psql("CREATE DATABASE bench_messenger")
    psql("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;", database="bench_messenger")


def summary(runs: list[Run], kind: str, rate: float) -> dict[str, Any]:
    chosen = [run for run in runs if run.kind == kind and run.rate == rate]

    def med(name: str) -> float:
        return float(statistics.median(float(getattr(run, name)) for run in chosen))

    return {
        "kind": kind,
        "rate": rate,
        "repetitions": len(chosen),
        **{
            name: med(name)
            for name in (
                "sent_per_s",
                "delivered_per_s",
                "p50_ms",
                "p95_ms",
                "p99_ms",
                "max_ms",
                "direct_p99_ms",
                "group_p99_ms",
                "reply_p50_ms",
                "reply_p99_ms",
                "generator_cpu_percent",
            )
        },
        "p99_ms_all": [run.p99_ms for run in chosen],
        "missing": sum(run.missing for run in chosen),
        "errors": sum(sum(run.errors.values()) for run in chosen),
    }


def bench_database(database: str, args: argparse.Namespace, pinning: Pinning) -> dict[str, Any]:
    log(f"== {database} ==")
    with tempfile.TemporaryDirectory(prefix="veche-bench-messenger-") as directory:
        workdir = Path(directory)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VECHE_")}
        env.update(MESSENGER_ENV)
        env["VECHE_ROLE"] = args.role
        env["VECHE_DATA_DIR"] = str(workdir / "var")
        env["PYTHONPATH"] = os.pathsep.join([str(BENCH), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        if database == "postgresql":
            reset_messenger_database()
            env["VECHE_DATABASE_URL"] = PG_MESSENGER_URL
        migrate(env, workdir)
        with server(env, workdir, pinning) as running:
            setup = asyncio.run(setup_users(running.port, args.users, args.group_size))
            setup_path = workdir / "setup.json"
            setup_path.write_text(json.dumps(setup), encoding="utf-8")
            command = [
                *pinning.prefix(pinning.client),
                sys.executable,
                str(BENCH / "blog_messenger.py"),
                "load",
                "--port",
                str(running.port),
                "--setup",
                str(setup_path),
                "--duration",
                str(args.duration),
                "--warmup",
                str(args.warmup),
                "--repetitions",
                str(args.repetitions),
                "--rates",
                *(f"{rate:g}" for rate in args.rates),
            ]
            budget = (len(args.rates) * 2 * args.repetitions + 2) * (args.duration + 15) + 300
            result = subprocess.run(
                command, check=False, capture_output=True, text=True, timeout=budget, env=env
            )
            sys.stderr.write(result.stderr[-4000:])
            if result.returncode != 0:
                tail = running.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise RuntimeError(f"the load process failed ({result.returncode}):\n{tail}")
            runs = [Run(**row) for row in json.loads(result.stdout.strip().splitlines()[-1])]
            server_log = running.log_path.read_text(encoding="utf-8", errors="replace")
    return {
        "database": database,
        "conversations": {
            "direct": sum(c["kind"] == "direct" for c in setup["conversations"]),
            "group": sum(c["kind"] == "group" for c in setup["conversations"]),
            "group_size": args.group_size,
        },
        "runs": [asdict(run) for run in runs],
        "summary": [
            summary(runs, kind, rate) for rate in args.rates for kind in ("baseline", "messenger")
        ],
        "server_log_tail": server_log[-3000:],
    }


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.users} users connected, {args.duration:g} s per run, medians of "
        f"{args.repetitions}; half the messages to a direct pair, half to a group of "
        f"{args.group_size}.",
        "",
        "| database | path | rate/s | sent/s | delivered/s | p50 ms | p95 ms | p99 ms "
        "| max ms | reply p50 ms | missing | errors | p99 < 100 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result["summary"]:
            verdict = "met" if row["p99_ms"] < TARGET_P99_MS else "missed"
            lines.append(
                f"| {result['database']} | {row['kind']} | {row['rate']:g} "
                f"| {row['sent_per_s']:.0f} | {row['delivered_per_s']:.0f} "
                f"| {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['p99_ms']:.1f} "
                f"| {row['max_ms']:.1f} | {row['reply_p50_ms']:.1f} | {row['missing']} "
                f"| {row['errors']} | {verdict if row['kind'] == 'messenger' else '-'} |"
            )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import importlib.metadata
    import platform

    versions = {}
    for package in ("uvicorn", "sqlalchemy", "aiosqlite", "asyncpg", "websockets", "uvloop"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "load_average_at_start": os.getloadavg(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("command", nargs="?", choices=["drive", "serve", "load"], default="drive")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--group-size", type=int, default=10)
    parser.add_argument("--rates", type=float, nargs="+", default=[50.0, 100.0, 200.0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of sending")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument(
        "--role",
        choices=["all", "api"],
        default="all",
        help="the server's VECHE_ROLE: all (event consumers in it) or api (none run)",
    )
    parser.add_argument("--port", type=int, default=0, help="(serve, load)")
    parser.add_argument("--setup", default="", help="(load) the users and conversations")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "serve":
        serve(args.port)
        return
    if args.command == "load":
        import uvloop

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
        runs = uvloop.run(load(args))
        print(json.dumps([asdict(run) for run in runs]))
        return
    pinning = choose_pinning(not args.no_pin)
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    started = dt.datetime.now(dt.UTC)
    host = machine()
    results = [bench_database(database, args, pinning) for database in databases]
    table = markdown(results, args)
    print(table)
    write_results(
        "blog_messenger",
        started,
        vars(args),
        pinning=asdict(pinning),
        machine={**host, "load_average_at_end": os.getloadavg()},
        results=results,
        table=table,
    )


if __name__ == "__main__":
    main()

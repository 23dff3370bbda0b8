"""Durable events benchmark: outbox -> consumer throughput and emit -> handled latency.

    .venv/bin/python bench/events_throughput.py [--backend sqlite|postgresql-nats|both]
        [--events 20000] [--batch 100] [--repetitions 3] [--layout single|split]

Each repetition runs in a fresh process (`--role run`) that builds the kernel with
`bench/bench_app` (through `bench/bench_server.py`) and runs its lifespan, as `veche serve`
does with role `all`: relay and consumers in the same process (`--layout split`: this
process is a worker, `VECHE_ROLE=worker`, and a second process with `VECHE_ROLE=api`
emits and relays, as an API replica and a worker are deployed). It emits `--events`
events of type `bench.tick.recorded` with `emit()`, `--batch` per unit of work (one
transaction each), as fast as it can, while the relay publishes them and the consumer
`bench-counter` handles them on the real path (its processed-event row, and on SQLite its
offset, committed with each event). Throughput is events / (last handler call - first
emit); latency is handler call time - the `time.time_ns()` stamped into the payload just
before `emit()`.

Backends:

- `sqlite`: a fresh `VECHE_DATA_DIR`, embedded SQL-log backend (`VECHE_EVENTS_URL` unset);
- `postgresql-nats`: database `bench` on 127.0.0.1:5432 (user postgres, trust; its
  `public` schema dropped and recreated, then `veche migrate`) and NATS JetStream at
  nats://127.0.0.1:4222 with a stream prefix unique to the run (its streams are deleted
  afterwards).

The in-process baseline, in the same process right after each run: the same events
(`Event` envelopes built from the same payloads) handed to the same handler through an
`asyncio.Queue`, with no database, outbox or transport.

Prints a Markdown table (medians) and writes the raw results to `bench/results/`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from common import BENCH, PG_URL, RESULTS, VENV_BIN, log, reset_postgresql

NATS_URL = "nats://127.0.0.1:4222"
TARGET_EVENTS_PER_S = 2000.0
WAIT_S = 240.0
SCRIPT = str(Path(__file__).resolve())


@dataclass(slots=True)
class Result:
    kind: str
    backend: str
    events: int
    handled: int = 0
    emit_s: float = 0.0
    total_s: float = 0.0
    emit_per_s: float = 0.0
    events_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0


def fill(result: Result, stamps: list[tuple[int, int]], first_emit_ns: int) -> None:
    result.handled = len(stamps)
    if not stamps:
        return
    last = max(handled for _, handled in stamps)
    result.total_s = round((last - first_emit_ns) / 1e9, 3)
    result.events_per_s = round(len(stamps) / max(result.total_s, 1e-9), 1)
    ordered = sorted(handled - emitted for emitted, handled in stamps)

    def pick(fraction: float) -> float:
        index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return round(ordered[index] / 1e6, 2)

    result.p50_ms, result.p95_ms, result.p99_ms = pick(0.5), pick(0.95), pick(0.99)
    result.max_ms = round(ordered[-1] / 1e6, 2)


# -- one repetition, in its own process ------------------------------------------------------


async def emit_ticks(kernel: Any, events: int, batch: int) -> None:
    from bench_app import TickRecorded
    from veche.kernel.events import emit

    for begin in range(0, events, batch):
        async with kernel.db.unit_of_work() as session:
            for seq in range(begin, min(begin + batch, events)):
                await emit(session, "bench.tick.recorded", TickRecorded(seq=seq, t=time.time_ns()))


async def emit_elsewhere(args: argparse.Namespace) -> tuple[int, float]:
    """Run the emitter as an API process (`VECHE_ROLE=api`: it emits and relays, as an API
    replica does); returns its first emit time (ns) and how long it emitted (s)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        SCRIPT,
        "--role",
        "emit",
        "--events",
        str(args.events),
        "--batch",
        str(args.batch),
        env={**os.environ, "VECHE_ROLE": "api"},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the emitter failed with {process.returncode}")
    first_ns, emit_s = json.loads(out.decode().strip().splitlines()[-1])
    return int(first_ns), float(emit_s)


async def emit_only(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(BENCH))
    from bench_server import create_app

    app = create_app()
    async with app.router.lifespan_context(app):
        first = time.time_ns()
        await emit_ticks(app.state.kernel, args.events, args.batch)
        emit_s = round((time.time_ns() - first) / 1e9, 3)
    print(json.dumps([first, emit_s]))  # read by the measuring process


async def run_once(args: argparse.Namespace) -> list[Result]:
    sys.path.insert(0, str(BENCH))
    from bench_app import COUNTER, TickRecorded, count_tick
    from bench_server import create_app
    from veche.kernel import Kernel
    from veche.kernel.events import ConsumerContext, Event

    if args.layout == "split":
        os.environ["VECHE_ROLE"] = "worker"  # this process: the consumer only
    app = create_app()
    kernel: Kernel = app.state.kernel
    kind = "outbox -> consumer" + (" (api + worker processes)" if args.layout == "split" else "")
    real = Result(kind, args.backend, args.events)
    async with app.router.lifespan_context(app):
        COUNTER.reset()
        if args.layout == "split":
            first, real.emit_s = await emit_elsewhere(args)
        else:
            first = time.time_ns()
            await emit_ticks(kernel, args.events, args.batch)
            real.emit_s = round((time.time_ns() - first) / 1e9, 3)
        real.emit_per_s = round(args.events / max(real.emit_s, 1e-9), 1)
        deadline = time.monotonic() + WAIT_S
        while len(COUNTER.stamps) < args.events and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        fill(real, list(COUNTER.stamps), first)

    # Baseline: the same handler fed through an in-process queue (no DB, no transport).
    base = Result("in-process queue (baseline)", args.backend, args.events)
    COUNTER.reset()
    queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=10_000)
    context = cast(ConsumerContext, None)  # the counting handler never touches it

    async def consume() -> None:
        while (event := await queue.get()) is not None:
            await count_tick(event, context)

    worker = asyncio.create_task(consume())
    first = time.time_ns()
    for begin in range(0, args.events, args.batch):
        for seq in range(begin, min(begin + args.batch, args.events)):
            payload = TickRecorded(seq=seq, t=time.time_ns())
            await queue.put(
                Event(type="bench.tick.recorded", source="bench", data=payload.model_dump())
            )
        await asyncio.sleep(0)  # a batch boundary, like a commit
    base.emit_s = round((time.time_ns() - first) / 1e9, 3)
    base.emit_per_s = round(args.events / max(base.emit_s, 1e-9), 1)
    await queue.put(None)
    await asyncio.wait_for(worker, WAIT_S)
    fill(base, list(COUNTER.stamps), first)
    return [real, base]


# -- driver ----------------------------------------------------------------------------------


async def delete_streams(prefix: str) -> int:
    import nats

    client = await nats.connect(NATS_URL, connect_timeout=5)
    deleted = 0
    try:
        js = client.jetstream()
        for info in await js.streams_info():
            name = info.config.name or ""
            if name.startswith(prefix.upper() + "_"):
                await js.delete_stream(name)
                deleted += 1
    finally:
        await client.close()
    return deleted


def environment(backend: str, data_dir: Path, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECHE_")}
    env.update(
        {
            "VECHE_ENV": "dev",
            "VECHE_LOG_LEVEL": "warning",
            "VECHE_ACCESS_LOG": "false",
            "VECHE_DATA_DIR": str(data_dir),
            "VECHE_EVENTS__STREAM_PREFIX": prefix,
            "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH), env.get("PYTHONPATH")) if p),
        }
    )
    if backend == "postgresql-nats":
        env["VECHE_DATABASE_URL"] = PG_URL
        env["VECHE_EVENTS_URL"] = NATS_URL
    return env


def one_repetition(args: argparse.Namespace, backend: str, repetition: int) -> list[Result]:
    prefix = f"bench{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="veche-events-") as tmp:
        env = environment(backend, Path(tmp), prefix)
        if backend == "postgresql-nats":
            reset_postgresql()
        subprocess.run(
            [str(VENV_BIN / "veche"), "migrate"],
            env=env,
            cwd=tmp,
            check=True,
            capture_output=True,
            timeout=120,
        )
        log(f"{backend} rep {repetition}: {args.events} events, batches of {args.batch}")
        try:
            result = subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--role",
                    "run",
                    "--backend",
                    backend,
                    "--events",
                    str(args.events),
                    "--batch",
                    str(args.batch),
                    "--layout",
                    args.layout,
                ],
                check=False,
                env=env,
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=WAIT_S + 120,
            )
        finally:
            if backend == "postgresql-nats":
                asyncio.run(delete_streams(prefix))
        sys.stderr.write(result.stderr[-3000:])
        if result.returncode != 0:
            raise RuntimeError(f"{backend} run failed with {result.returncode}")
        rows = [Result(**row) for row in json.loads(result.stdout.strip().splitlines()[-1])]
        for row in rows:
            log(f"  {row.kind}: {row.handled}/{row.events} at {row.events_per_s}/s")
        return rows


def median_row(rows: list[Result]) -> dict[str, Any]:
    def med(name: str) -> float:
        return float(statistics.median(getattr(row, name) for row in rows))

    names = ["handled", "emit_per_s", "events_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms"]
    return {"kind": rows[0].kind, "backend": rows[0].backend} | {n: med(n) for n in names}


def drive(args: argparse.Namespace) -> None:
    backends = ["sqlite", "postgresql-nats"] if args.backend == "both" else [args.backend]
    runs: dict[str, list[Result]] = {}
    for backend in backends:
        for repetition in range(1, args.repetitions + 1):
            for row in one_repetition(args, backend, repetition):
                runs.setdefault(f"{backend}/{row.kind}", []).append(row)
    medians = [median_row(rows) for rows in runs.values()]
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"events_throughput-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "runs": {key: [asdict(row) for row in rows] for key, rows in runs.items()},
                "medians": medians,
                "target_events_per_s": TARGET_EVENTS_PER_S,
            },
            indent=2,
        )
    )
    print("| backend | path | handled | emit/s | end-to-end events/s | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for found in medians:
        print(
            f"| {found['backend']} | {found['kind']} | {int(found['handled'])} / {args.events} "
            f"| {found['emit_per_s']:.0f} | {found['events_per_s']:.0f} | {found['p50_ms']:.1f} "
            f"| {found['p95_ms']:.1f} | {found['p99_ms']:.1f} |"
        )
    for found in medians:
        if found["backend"] == "postgresql-nats" and found["kind"] == "outbox -> consumer":
            verdict = "met" if found["events_per_s"] >= TARGET_EVENTS_PER_S else "MISSED"
            print(f"- PostgreSQL + NATS: {found['events_per_s']:.0f} events/s -> {verdict}")
    log(f"raw results: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=["driver", "run", "emit"], default="driver")
    parser.add_argument("--backend", choices=["sqlite", "postgresql-nats", "both"], default="both")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100, help="events per transaction")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument(
        "--layout",
        choices=["single", "split"],
        default="single",
        help="single: one process with VECHE_ROLE=all; split: an API process emits (and "
        "relays) while a worker process consumes, as deployed",
    )
    args = parser.parse_args()
    if args.role == "driver":
        drive(args)
        return
    import uvloop

    if args.role == "emit":
        uvloop.run(asyncio.wait_for(emit_only(args), WAIT_S))
        return
    results = uvloop.run(asyncio.wait_for(run_once(args), WAIT_S + 60))
    print(json.dumps([asdict(result) for result in results]))


if __name__ == "__main__":
    main()

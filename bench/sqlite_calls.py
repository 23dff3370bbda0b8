"""What one SQLite statement costs the event loop through the kernel's `Database`.

    cd bench && ../.venv/bin/python sqlite_calls.py [--calls 2000] [--rounds 3]

A fresh migrated SQLite database (`veche.migrate.upgrade`, the kernel's tables only) and a
`Database` on it, in this process. Each round times, in turn, `--calls` of each of:

- `read_one`: `Database.read_one` of a user by primary key (no such user: one index probe),
  as the per-request session lookup and the AI budget read do;
- `uow select`: the same statement in a `unit_of_work()` (begin, execute, commit);
- `uow insert`: one audit event added and committed in a `unit_of_work()`;
- `aiosqlite select`: the same `SELECT` on a bare aiosqlite connection (three calls:
  execute, fetchall, close), outside the kernel, for scale;
- `sqlite3 select`: the same on a plain `sqlite3` connection.

Per call: microseconds of this process's CPU (`time.process_time`) and of wall time. The
table gives the median over rounds. To compare code versions, run it against each one
(`PYTHONPATH=<other checkout>/src`) in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosqlite
from sqlalchemy import select

from common import write_results
from veche.kernel.audit import AuditEvent
from veche.kernel.db import Database
from veche.kernel.identity.models import User
from veche.migrate import upgrade
from veche.settings import Settings

PROBE = "SELECT id, email FROM users WHERE id = ?"


async def timed(calls: int, call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Microseconds per call: (CPU, wall)."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await call()
    return (
        (time.process_time() - cpu) / calls * 1e6,
        (time.perf_counter() - wall) / calls * 1e6,
    )


async def measure(args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    with tempfile.TemporaryDirectory(prefix="veche-sqlite-calls-") as tmp:
        settings = Settings(data_dir=Path(tmp), secret_key="bench-" + "x" * 40)
        await upgrade(settings)
        db = Database(settings)
        path = settings.resolved_database_url.split(":///", 1)[1]
        missing = uuid.uuid4()
        probe = select(User.id, User.email).where(User.id == missing)
        bare = await aiosqlite.connect(path)
        plain = sqlite3.connect(path)

        async def read_one() -> object:
            return await db.read_one(probe)

        async def uow_select() -> object:
            async with db.unit_of_work() as session:
                return (await session.execute(probe)).one_or_none()

        async def uow_insert() -> object:
            async with db.unit_of_work() as session:
                session.add(AuditEvent(action="bench.call"))
            return None

        async def aiosqlite_select() -> object:
            cursor = await bare.execute(PROBE, (missing.hex,))
            rows = await cursor.fetchall()
            await cursor.close()
            return rows

        async def sqlite3_select() -> object:
            return plain.execute(PROBE, (missing.hex,)).fetchall()

        kinds: dict[str, Callable[[], Awaitable[object]]] = {
            "read_one": read_one,
            "uow select": uow_select,
            "uow insert": uow_insert,
            "aiosqlite select": aiosqlite_select,
            "sqlite3 select": sqlite3_select,
        }
        found: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
        try:
            for call in kinds.values():  # warm-up: connections, statement caches
                await timed(50, call)
            for _ in range(args.rounds):
                for kind, call in kinds.items():
                    found[kind].append(await timed(args.calls, call))
        finally:
            await bare.close()
            plain.close()
            await db.dispose()
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    found = asyncio.run(measure(args))
    print("| call | CPU us per call | wall us per call |")
    print("|---|---|---|")
    medians = {}
    for kind, samples in found.items():
        cpu = statistics.median(sample[0] for sample in samples)
        wall = statistics.median(sample[1] for sample in samples)
        medians[kind] = {"cpu_us": round(cpu, 1), "wall_us": round(wall, 1)}
        print(f"| {kind} | {cpu:.1f} | {wall:.1f} |")
    write_results("sqlite_calls", started, vars(args), rounds=found, medians=medians)


if __name__ == "__main__":
    main()

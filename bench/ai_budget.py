"""What a budget check costs as a user's calls of the day grow.

    cd bench && ../.venv/bin/python ai_budget.py [--backend sqlite|postgresql|both]
        [--rows 0,10000,100000] [--reads 300]

For each number of rows: a fresh migrated database (SQLite in a temporary data dir, or the
`bench` database on 127.0.0.1:5432 with its schema dropped and migrated), one user, and
that many `ai_usage` rows of today for them, with the day's total in `ai_usage_days` as a
ledger would have written it (both inserted in bulk). Then, alternating, `--reads` times
each:

- `UsageLedger.budget`: the check every model call makes (one read of the day's totals,
  `Database.read_all`, plus this ledger's calls not stored yet: none here);
- baseline: the statement the check ran before the totals existed, the sum of the day's
  rows (`SUM(prompt_tokens + completion_tokens)` over the user's rows since midnight, on
  the index on (user_id, created_at)), through `Database.read_one` as it was.

Per call: microseconds of wall time and of this process's CPU (medians of the per-call
times). Both answers are checked to agree. Writes the raw results to
`bench/results/ai_budget-<stamp>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from common import PG_URL, log, reset_postgresql, write_results
from veche.kernel.ai.models import AIUsage, AIUsageDay
from veche.kernel.ai.usage import UsageLedger, day_start
from veche.kernel.db import Database, new_id, utcnow
from veche.kernel.identity.models import User
from veche.migrate import upgrade
from veche.settings import Settings

INSERT_BATCH = 5_000


async def fill(db: Database, rows: int) -> Any:
    """One user with `rows` calls of today and the day's total; the user's id."""
    user = User(email="budget@example.com", display_name="Budget", password_hash=None)
    async with db.unit_of_work() as session:
        session.add(user)
    start = day_start(utcnow())
    for first in range(0, rows, INSERT_BATCH):
        batch = [
            {
                "id": new_id(),
                "user_id": user.id,
                "app": "bench",
                "purpose": "default",
                "kind": "chat",
                "provider": "openai",
                "model": "bench",
                "prompt_tokens": 3,
                "completion_tokens": 2,
                "latency_ms": 1,
                "outcome": "ok",
                "cost": 0.0,
                "created_at": start + dt.timedelta(microseconds=n),
            }
            for n in range(first, min(rows, first + INSERT_BATCH))
        ]
        async with db.unit_of_work() as session:
            await session.execute(insert(AIUsage), batch)
    async with db.unit_of_work() as session:
        session.add(
            AIUsageDay(
                user_id=user.id, day=start.date(), ledger_id=new_id(), tokens=5 * rows, batch=1
            )
        )
    return user.id


async def per_call(call: Callable[[], Awaitable[int]], reads: int) -> tuple[list[float], ...]:
    walls, cpus = [], []
    for _ in range(reads):
        wall, cpu = time.perf_counter(), time.process_time()
        await call()
        walls.append((time.perf_counter() - wall) * 1e6)
        cpus.append((time.process_time() - cpu) * 1e6)
    return walls, cpus


async def measure(backend: str, rows: int, reads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="veche-ai-budget-") as tmp:
        values: dict[str, Any] = {"data_dir": Path(tmp), "secret_key": "bench-" + "x" * 40}
        if backend == "postgresql":
            reset_postgresql()
            values["database_url"] = PG_URL
        settings = Settings(**values)
        await upgrade(settings)
        db = Database(settings)
        ledger = UsageLedger(settings.ai, db)
        try:
            user_id = await fill(db, rows)
            since = day_start(utcnow())
            summed = select(
                func.coalesce(func.sum(AIUsage.prompt_tokens + AIUsage.completion_tokens), 0)
            ).where(AIUsage.user_id == user_id, AIUsage.created_at >= since)

            async def check() -> int:
                return (await ledger.budget(user_id)).used_today

            async def baseline() -> int:
                row = await db.read_one(summed)
                return int(row[0] if row is not None else 0)

            assert await check() == await baseline() == 5 * rows
            for call in (check, baseline):  # warm-up: connections, statement caches
                await per_call(call, 20)
            found: dict[str, tuple[list[float], list[float]]] = {
                "budget check": ([], []),
                "baseline: sum of the day's rows": ([], []),
            }
            for _ in range(3):  # alternate, so both meet the same machine
                for name, call in zip(found, (check, baseline), strict=True):
                    walls, cpus = await per_call(call, reads // 3)
                    found[name][0].extend(walls)
                    found[name][1].extend(cpus)
        finally:
            await ledger.flush()
            await db.dispose()
    return {
        name: {
            "wall_us_p50": round(statistics.median(walls), 1),
            "cpu_us_p50": round(statistics.median(cpus), 1),
        }
        for name, (walls, cpus) in found.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rows", default="0,10000,100000")
    parser.add_argument("--reads", type=int, default=300)
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    counts = [int(part) for part in args.rows.split(",")]
    results: list[dict[str, Any]] = []
    print("| backend | rows today | budget check, us wall / CPU | baseline sum, us wall / CPU |")
    print("|---|---|---|---|")
    for backend in backends:
        for rows in counts:
            log(f"{backend}: {rows} rows")
            found = asyncio.run(measure(backend, rows, args.reads))
            results.append({"backend": backend, "rows": rows, **found})
            check, base = found["budget check"], found["baseline: sum of the day's rows"]
            print(
                f"| {backend} | {rows:,} | {check['wall_us_p50']} / {check['cpu_us_p50']} "
                f"| {base['wall_us_p50']} / {base['cpu_us_p50']} |",
                flush=True,
            )
    write_results("ai_budget", started, vars(args), results=results)


if __name__ == "__main__":
    main()

"""Where a plan's database work goes: statements, commits and (SQLite) the writer's turns.

    cd bench && ../.venv/bin/python agents_plan_profile.py [--plans 10] [--top 25]
        [--backend sqlite|postgresql-nats]

The setup of `agents_orchestration.py --mode plan` (its fake model in a child process, a
fresh migrated SQLite database, agents a1..a4, 3 warm-up plans), then `--plans` plans
with two listeners on the engine:

- every statement, its text shortened to its first 100 characters with parameter lists
  folded, counted per plan, and the commits per plan;
- each write transaction's turn at the process's SQLite writer (`_SQLiteWriters`, from
  its first write to its connection's return to the pool), grouped by the statement that
  took the turn: turns per plan, mean hold, mean wait for the turn, and the held
  milliseconds per plan beside the plan's wall time.

Single reads outside a unit of work (`Database.read_one`, `read_all`) go through an engine
of their own; they are counted apart and listed with the others. On PostgreSQL there is no
writer's turn to time. The timing listeners cost CPU of their own: compare figures from
one run with each other, not with `agents_orchestration.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import sys
import time
from typing import Any

from sqlalchemy import event

import agents_orchestration as orchestration
from veche.kernel import db as kernel_db

# The measurement wraps the writer's two hooks.
Writers = kernel_db._SQLiteWriters


class WriterTurns:
    """Wraps the writer's acquire and release hooks to time each turn."""

    def __init__(self) -> None:
        self.active = False
        self.holds: dict[str, list[float]] = collections.defaultdict(list)
        self.waits: dict[str, list[float]] = collections.defaultdict(list)
        self._before = Writers._before_execute
        self._checked_in = Writers._checked_in

    def install(self) -> None:
        turns = self
        before, checked_in = self._before, self._checked_in

        def timed_before(writers: Any, connection: Any, *args: Any) -> None:
            info = connection.info
            had = writers.INFO_KEY in info
            began = time.perf_counter()
            before(writers, connection, *args)
            if not had and writers.INFO_KEY in info:
                key = _short(args[1])
                info["bench.turn"] = (time.perf_counter(), key)
                if turns.active:
                    turns.waits[key].append(time.perf_counter() - began)

        def timed_checked_in(writers: Any, dbapi_connection: Any, record: Any) -> None:
            turn = record.info.pop("bench.turn", None)
            if turn is not None and turns.active:
                turns.holds[turn[1]].append(time.perf_counter() - turn[0])
            checked_in(writers, dbapi_connection, record)

        Writers._before_execute = timed_before  # type: ignore[method-assign]
        Writers._checked_in = timed_checked_in  # type: ignore[method-assign]


def _short(statement: str) -> str:
    text = re.sub(r"\s+", " ", statement)
    return re.sub(r"\(\?(, \?)*\)", "(?..)", text)[:100]


async def profile(args: argparse.Namespace, turns: WriterTurns) -> None:
    # The options of `agents_orchestration.py --mode plan` at their defaults.
    settings = argparse.Namespace(
        mode="plan",
        backend=args.backend,
        iterations=args.plans,
        delay_ms=0,
        repetitions=1,
        tasks=0,
        sessions=0,
        posters=0,
        fake="process",
    )
    fake = orchestration.OutOfProcessFake(0)
    with fake.running():
        async with (
            orchestration.fresh_app(settings, fake) as app,
            orchestration.client(app) as api,
        ):
            url, session_id, _cards = await orchestration.plan_setup(api)
            connection = await api.listening([session_id])
            for _ in range(orchestration.WARM_UPS):
                await orchestration.one_plan(api, url, connection)
            statements: collections.Counter[str] = collections.Counter()
            commits = reads = 0

            def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
                statements[_short(statement)] += 1

            def read(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
                nonlocal reads
                reads += 1
                statements["(single read) " + _short(statement)] += 1

            def committed(_conn: Any) -> None:
                nonlocal commits
                commits += 1

            engine = api.kernel.db.engine.sync_engine
            reads_engine = api.kernel.db._reads.engine
            reads_engine = getattr(reads_engine, "sync_engine", reads_engine)
            event.listen(engine, "before_cursor_execute", count)
            event.listen(engine, "commit", committed)
            event.listen(reads_engine, "before_cursor_execute", read)
            turns.active = True
            began = time.perf_counter()
            for _ in range(args.plans):
                await orchestration.one_plan(api, url, connection)
            wall = (time.perf_counter() - began) / args.plans
            turns.active = False
            event.remove(engine, "before_cursor_execute", count)
            event.remove(engine, "commit", committed)
            event.remove(reads_engine, "before_cursor_execute", read)
    plans = args.plans
    held = sum(sum(values) for values in turns.holds.values()) / plans
    print(
        f"per plan ({args.backend}): {sum(statements.values()) / plans:.1f} statements "
        f"({reads / plans:.1f} of them single reads), "
        f"{commits / plans:.1f} commits, wall {wall * 1000:.1f} ms, "
        f"SQLite's writer held {held * 1000:.1f} ms"
    )
    print("\n| turns a plan | held ms a plan | mean hold ms | mean wait ms | taken by |")
    print("|---|---|---|---|---|")
    for key, values in sorted(turns.holds.items(), key=lambda item: -sum(item[1])):
        waits = turns.waits[key]
        print(
            f"| {len(values) / plans:.1f} | {sum(values) / plans * 1000:.1f} "
            f"| {sum(values) / len(values) * 1000:.2f} "
            f"| {sum(waits) / max(1, len(waits)) * 1000:.2f} | `{key[:70]}` |"
        )
    print("\n| a plan | statement |")
    print("|---|---|")
    for statement, number in statements.most_common(args.top):
        print(f"| {number / plans:.1f} | `{statement}` |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=10)
    parser.add_argument("--top", type=int, default=25, help="statements listed")
    parser.add_argument("--backend", choices=["sqlite", "postgresql-nats"], default="sqlite")
    args = parser.parse_args()
    turns = WriterTurns()
    turns.install()
    sys.argv = sys.argv[:1]
    asyncio.run(profile(args, turns))


if __name__ == "__main__":
    main()

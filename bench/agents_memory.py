"""Agent memory benchmark: `AgentMemory.recall` latency at 100,000 vectors for one agent.

    .venv/bin/python bench/agents_memory.py [--entries 100000] [--queries 300]
        [--embedded-queries 60] [--limit 5]

Setup, in a temporary data directory: a migrated SQLite database with one user, one
project and one agent; `--entries` ledger rows (`agents_memory`) inserted in bulk and the
same number of random unit vectors (clustered, 384-d) upserted straight into the embedded
vector store with the payload `AgentMemory` writes; then the planner statistics the
kernel's scheduled job keeps (`Database.refresh_statistics`). Times are spread over 100
days; 80% of entries are `chat`, 19% `plan`, 1% `tool`; 90% succeeded.

Measured, in one process, p50/p95 over `--queries` searches each (limit `--limit`):

- baseline: the raw vector-store search over the same scope (user + agent + project), no
  ledger, no filters;
- `AgentMemory.search` (recall with the query already embedded): no filter; `type=chat`
  (broad: the over-fetched top list suffices); `type=tool` and a one-day time range
  (selective: the ledger names the candidates); results come from the ledger rows;
- `AgentMemory.recall` end to end with a real e5 query embedding of distinct texts (cache
  misses), and the embedding alone, over `--embedded-queries` queries.

Prints a Markdown table and writes the raw results to `bench/results/`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
from sqlalchemy import insert

from common import RESULTS, log
from veche.apps.agents.memory import (
    VECTOR_APP,
    AgentMemory,
    MemoryFilters,
    memory_scope,
    microseconds,
)
from veche.apps.agents.models import Agent, MemoryEntry, Project
from veche.kernel import Database, new_id
from veche.kernel.ai.services import AIServices
from veche.kernel.ai.vectors import VectorFilter, VectorRecord
from veche.kernel.identity.models import User
from veche.migrate import upgrade
from veche.settings import Settings

DAYS = 100
START = dt.datetime(2026, 8, 1, tzinfo=dt.UTC)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(p95 * 1000, 3),
    }


async def timed(samples: list[float], call: Callable[[], Awaitable[Any]]) -> Any:
    started = time.perf_counter()
    result = await call()
    samples.append(time.perf_counter() - started)
    return result


async def populate(
    db: Database, ai: AIServices, entries: int, rng: np.random.Generator
) -> tuple[UUID, UUID, UUID, np.ndarray]:
    user_id, project_id, agent_id = new_id(), new_id(), new_id()
    async with db.unit_of_work() as session:
        session.add(User(id=user_id, email="bench@example.com", display_name="Bench"))
        await session.flush()
        session.add(Project(id=project_id, user_id=user_id, name="bench", workspace="x"))
        session.add(Agent(id=agent_id, user_id=user_id, name="bench", config={}))
    store = await ai.vectors()
    centres = rng.standard_normal((500, store.dimensions)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), entries)] + 0.6 * rng.standard_normal(
        (entries, store.dimensions), dtype=np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    kinds = rng.choice(["chat", "plan", "tool"], size=entries, p=[0.8, 0.19, 0.01])
    successes = rng.random(entries) < 0.9
    step = dt.timedelta(days=DAYS) / entries
    log(f"inserting {entries} ledger rows and vectors")
    started = time.perf_counter()
    for begin in range(0, entries, 5000):
        rows: list[dict[str, Any]] = []
        records: list[VectorRecord] = []
        for i in range(begin, min(begin + 5000, entries)):
            entry_id, created_at = new_id(), START + i * step
            rows.append(
                {
                    "id": entry_id,
                    "user_id": user_id,
                    "agent_id": agent_id,
                    "project_id": project_id,
                    "type": str(kinds[i]),
                    "success": bool(successes[i]),
                    "request": f"request {i}",
                    "response": f"response {i}",
                    "size_bytes": 20,
                    "created_at": created_at,
                }
            )
            records.append(
                VectorRecord(
                    id=str(entry_id),
                    vector=vectors[i],
                    app=VECTOR_APP,
                    scope=memory_scope(agent_id, project_id),
                    user_id=user_id,
                    payload={
                        "agent_id": str(agent_id),
                        "project_id": str(project_id),
                        "type": str(kinds[i]),
                        "success": bool(successes[i]),
                        "created_us": microseconds(created_at),
                    },
                )
            )
        async with db.unit_of_work() as session:
            await session.execute(insert(MemoryEntry), rows)
        await store.upsert(records)
    log(f"  done in {time.perf_counter() - started:.1f} s")
    queries = centres[rng.integers(0, len(centres), 1000)] + 0.6 * rng.standard_normal(
        (1000, store.dimensions), dtype=np.float32
    )
    return user_id, agent_id, project_id, queries.astype(np.float32)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(20_261_122)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="veche-memory-") as tmp:
        settings = Settings(
            _env_file=None,
            env="test",
            data_dir=Path(tmp),
            database_url=f"sqlite+aiosqlite:///{tmp}/bench.db",
            secret_key="bench-secret-key-that-is-long-enough-0123456789",  # noqa: S106
            log_level="warning",
        )
        await upgrade(settings)
        db = Database(settings)
        ai = AIServices(settings, db)
        memory = AgentMemory(ai)
        user_id, agent_id, project_id, queries = await populate(db, ai, args.entries, rng)
        # What the kernel's hourly statistics job (SQLite) would have done by now.
        await db.refresh_statistics()
        store = await ai.vectors()
        scoped = VectorFilter(
            app=VECTOR_APP, user_id=user_id, scope=memory_scope(agent_id, project_id)
        )
        ids = {"user_id": user_id, "agent_id": agent_id, "project_id": project_id}
        last_day = START + dt.timedelta(days=DAYS - 1)
        cases = {
            "no filter": MemoryFilters(),
            "type=chat (80%)": MemoryFilters(type="chat"),
            "type=tool (1%)": MemoryFilters(type="tool"),
            "last day (1%)": MemoryFilters(since=last_day),
        }

        samples: list[float] = []
        for n in range(args.queries):
            vector = queries[n]
            await timed(samples, lambda v=vector: store.search(v, filter=scoped, limit=args.limit))
        results["baseline: raw store search, same scope"] = percentiles(samples)
        log(f"  baseline: {results['baseline: raw store search, same scope']}")

        async with db.sessions() as session:
            for name, filters in cases.items():
                samples = []
                for n in range(args.queries):
                    vector = queries[n]
                    hits = await timed(
                        samples,
                        lambda v=vector, f=filters: memory.search(
                            session, **ids, vector=v, limit=args.limit, filters=f
                        ),
                    )
                    assert len(hits) == args.limit, (name, len(hits))
                results[f"AgentMemory.search, {name}"] = percentiles(samples)
                log(f"  {name}: {results[f'AgentMemory.search, {name}']}")

            embed: list[float] = []
            recall: list[float] = []
            for n in range(args.embedded_queries):
                text = f"how did we fix the deployment problem number {n} last week?"
                await timed(embed, lambda t=text: ai.embedder.embed_query("e " + t))
                await timed(
                    recall,
                    lambda t=text: memory.recall(session, **ids, query=t, limit=args.limit),
                )
            results["e5 query embedding alone (cache miss)"] = percentiles(embed)
            results["AgentMemory.recall with e5 embedding, no filter"] = percentiles(recall)
        for name, figures in results.items():
            log(f"  {name}: p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms")
        await ai.aclose()
        await db.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--embedded-queries", type=int, default=60)
    parser.add_argument("--limit", type=int, default=5)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"agents_memory-{stamp}.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"| search ({args.entries} vectors, one agent and project) | p50 ms | p95 ms |")
    print("|---|---|---|")
    for name, figures in results.items():
        print(f"| {name} | {figures['p50_ms']} | {figures['p95_ms']} |")
    log(f"raw results: {out}")


if __name__ == "__main__":
    main()

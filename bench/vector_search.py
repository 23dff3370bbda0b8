"""Vector memory benchmark: upsert rate, filtered and unfiltered top-10 latency, recall.

    .venv/bin/python bench/vector_search.py [--records 100000] [--dimensions 384]
        [--users 100] [--scopes 10] [--queries 300] [--qdrant-records 10000] [--no-qdrant]

Data: `--records` unit vectors drawn around 1,000 seeded cluster centres, each owned by one
of `--users` users and one of `--scopes` scopes (so a user+scope filter matches about
records / users / scopes rows, a user filter records / users). Queries are fresh points
near random centres, each with a random user and scope.

Measured, in one process, through the store's public async API (so every figure includes
the hop to a worker thread):

- upsert: batches of 1,000 into an empty store (records/s), then single-record upserts
  (durable commit each, p50/p95 ms);
- open: a second instance loading the whole store from SQLite into its mirror;
- search p50/p95 (ms) for user+scope, user only and no filter, `--queries` each;
- search right after another instance committed one record (the catch-up path);
- recall@10 of every search against the baseline: exact numpy search over the same
  normalised matrix in memory, whose own latency is reported too;
- Qdrant local mode (`qdrant-client`, `:memory:`) on the first `--qdrant-records` records.

Prints a Markdown table and writes the raw results to `bench/results/`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import resource
import statistics
import tempfile
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common import RESULTS, log
from veche.kernel.ai.vectors import EmbeddedVectorStore, VectorFilter, VectorRecord, VectorStore

TOP = 10
Matrix = npt.NDArray[np.float32]


@dataclass(slots=True)
class Latency:
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    recall_at_10: float | None = None


@dataclass(slots=True)
class StoreResult:
    store: str
    records: int
    upsert_per_s: float = 0.0
    single_upsert: Latency = field(default_factory=Latency)
    open_s: float | None = None
    searches: dict[str, Latency] = field(default_factory=dict)
    rss_mib: float | None = None


@dataclass(slots=True)
class Dataset:
    vectors: Matrix  # normalised
    users: npt.NDArray[np.int64]
    scopes: npt.NDArray[np.int64]
    user_ids: list[uuid.UUID]
    queries: Matrix
    query_users: npt.NDArray[np.int64]
    query_scopes: npt.NDArray[np.int64]

    def records(self, start: int, stop: int) -> list[VectorRecord]:
        return [
            VectorRecord(
                id=f"r{i}",
                vector=self.vectors[i],
                app="bench",
                scope=f"s{self.scopes[i]}",
                user_id=self.user_ids[self.users[i]],
                payload={"n": i},
            )
            for i in range(start, stop)
        ]


def make_dataset(args: argparse.Namespace) -> Dataset:
    rng = np.random.default_rng(20_240_611)
    centres = rng.standard_normal((1000, args.dimensions)).astype(np.float32)
    picks = rng.integers(0, len(centres), args.records)
    vectors = centres[picks] + 0.6 * rng.standard_normal(
        (args.records, args.dimensions), dtype=np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = centres[rng.integers(0, len(centres), args.queries)] + 0.6 * rng.standard_normal(
        (args.queries, args.dimensions), dtype=np.float32
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return Dataset(
        vectors=vectors,
        users=rng.integers(0, args.users, args.records),
        scopes=rng.integers(0, args.scopes, args.records),
        user_ids=[uuid.UUID(int=rng.integers(0, 2**62).item() + 1) for _ in range(args.users)],
        queries=queries.astype(np.float32),
        query_users=rng.integers(0, args.users, args.queries),
        query_scopes=rng.integers(0, args.scopes, args.queries),
    )


def filter_for(data: Dataset, kind: str, query: int) -> VectorFilter:
    user = data.user_ids[data.query_users[query]]
    if kind == "user+scope":
        return VectorFilter(app="bench", user_id=user, scope=f"s{data.query_scopes[query]}")
    if kind == "user":
        return VectorFilter(app="bench", user_id=user)
    return VectorFilter()


def exact_top(data: Dataset, size: int, kind: str, query: int) -> list[str]:
    """The baseline: exact search over the in-memory matrix with a boolean mask."""
    if kind == "none":
        rows = np.arange(size)
        scores = data.vectors[:size] @ data.queries[query]
    else:
        mask = data.users[:size] == data.query_users[query]
        if kind == "user+scope":
            mask &= data.scopes[:size] == data.query_scopes[query]
        rows = np.flatnonzero(mask)
        scores = data.vectors[rows] @ data.queries[query]
    count = min(TOP, len(rows))
    best = np.argpartition(-scores, count - 1)[:count] if count < len(rows) else np.arange(count)
    best = best[np.argsort(-scores[best])]
    return [f"r{row}" for row in rows[best]]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]
    return round(statistics.median(ordered) * 1000, 3), round(p95 * 1000, 3)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


async def timed(samples: list[float], call: Callable[[], Awaitable[Any]]) -> Any:
    started = time.perf_counter()
    result = await call()
    samples.append(time.perf_counter() - started)
    return result


async def measure_searches(
    store: VectorStore, data: Dataset, size: int, queries: int
) -> dict[str, Latency]:
    found: dict[str, Latency] = {}
    for kind in ("user+scope", "user", "none"):
        samples: list[float] = []
        recalls: list[float] = []
        for query in range(queries):
            vector = data.queries[query]
            selector = filter_for(data, kind, query)
            hits = await timed(
                samples, lambda v=vector, f=selector: store.search(v, filter=f, limit=TOP)
            )
            expected = exact_top(data, size, kind, query)
            got = {hit.id for hit in hits}
            recalls.append(len(got & set(expected)) / len(expected) if expected else float(not got))
        p50, p95 = percentiles(samples)
        found[kind] = Latency(p50, p95, round(statistics.fmean(recalls), 4))
        log(f"  {kind}: p50 {p50} ms, p95 {p95} ms, recall@10 {found[kind].recall_at_10}")
    return found


def measure_baseline(data: Dataset, size: int, queries: int) -> StoreResult:
    result = StoreResult("numpy exact in memory (baseline)", size)
    for kind in ("user+scope", "user", "none"):
        samples: list[float] = []
        for query in range(queries):
            started = time.perf_counter()
            exact_top(data, size, kind, query)
            samples.append(time.perf_counter() - started)
        p50, p95 = percentiles(samples)
        result.searches[kind] = Latency(p50, p95, 1.0)
    return result


async def bench_embedded(args: argparse.Namespace, data: Dataset) -> StoreResult:
    result = StoreResult("embedded (SQLite + numpy mirror)", args.records)
    with tempfile.TemporaryDirectory(prefix="veche-vectors-") as tmp:
        store = await EmbeddedVectorStore.open(Path(tmp), args.dimensions)
        log(f"embedded: upserting {args.records} records in batches of 1000")
        started = time.perf_counter()
        for start in range(0, args.records, 1000):
            await store.upsert(data.records(start, min(start + 1000, args.records)))
        result.upsert_per_s = round(args.records / (time.perf_counter() - started), 1)
        log(f"  {result.upsert_per_s} records/s")

        singles: list[float] = []
        for i in range(200):  # rewrite existing records one by one: same data afterwards
            record = data.records(i, i + 1)
            await timed(singles, lambda r=record: store.upsert(r))
        result.single_upsert = Latency(*percentiles(singles))

        started = time.perf_counter()
        other = await EmbeddedVectorStore.open(Path(tmp), args.dimensions)
        result.open_s = round(time.perf_counter() - started, 2)
        log(f"  second instance opened (mirror loaded) in {result.open_s} s")

        result.searches = await measure_searches(store, data, args.records, args.queries)

        # Another instance (as another process would) commits, then this one searches.
        catch_up: list[float] = []
        for query in range(min(100, args.queries)):
            i = query % args.records
            await other.upsert(data.records(i, i + 1))
            selector = filter_for(data, "user+scope", query)
            vector = data.queries[query]
            await timed(catch_up, lambda v=vector, f=selector: store.search(v, filter=f))
        result.searches["user+scope after another instance's write"] = Latency(
            *percentiles(catch_up)
        )
        await other.aclose()
        result.rss_mib = rss_mib()
        await store.aclose()
    return result


async def bench_qdrant(args: argparse.Namespace, data: Dataset) -> StoreResult:
    from qdrant_client import AsyncQdrantClient

    from veche.kernel.ai.vectors.qdrant import QdrantVectorStore

    size = min(args.qdrant_records, args.records)
    result = StoreResult("qdrant-client local mode (:memory:)", size)
    store = QdrantVectorStore(AsyncQdrantClient(location=":memory:"), "bench", args.dimensions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        await store.ensure_collection()
    log(f"qdrant local: upserting {size} records")
    started = time.perf_counter()
    for start in range(0, size, 1000):
        await store.upsert(data.records(start, min(start + 1000, size)))
    result.upsert_per_s = round(size / (time.perf_counter() - started), 1)
    result.searches = await measure_searches(store, data, size, min(args.queries, 100))
    await store.aclose()
    return result


def table(results: list[StoreResult]) -> str:
    lines = [
        "| store | records | upsert/s (batch 1000) | single upsert p50/p95 ms | open s "
        "| user+scope p50/p95 ms | user p50/p95 ms | no filter p50/p95 ms | recall@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for found in results:
        cells = []
        for kind in ("user+scope", "user", "none"):
            latency = found.searches.get(kind, Latency())
            cells.append(f"{latency.p50_ms} / {latency.p95_ms}")
        recalls = [s.recall_at_10 for s in found.searches.values() if s.recall_at_10 is not None]
        single = found.single_upsert
        lines.append(
            f"| {found.store} | {found.records} | {found.upsert_per_s or '-'} "
            f"| {single.p50_ms} / {single.p95_ms} | {found.open_s or '-'} | "
            + " | ".join(cells)
            + f" | {min(recalls) if recalls else '-'} |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> None:
    log(f"dataset: {args.records} x {args.dimensions}, {args.users} users x {args.scopes} scopes")
    data = make_dataset(args)
    results = [measure_baseline(data, args.records, args.queries)]
    results.append(await bench_embedded(args, data))
    if not args.no_qdrant:
        results.append(await bench_qdrant(args, data))
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"vector_search-{stamp}.json"
    out.write_text(
        json.dumps({"args": vars(args), "results": [asdict(r) for r in results]}, indent=2)
    )
    print(table(results))
    embedded = results[1]
    catch_up = embedded.searches["user+scope after another instance's write"]
    print(
        f"- embedded: user+scope search right after another instance's write: "
        f"p50 {catch_up.p50_ms} ms, p95 {catch_up.p95_ms} ms; RSS {embedded.rss_mib} MiB"
    )
    log(f"raw results: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--scopes", type=int, default=10, help="scopes per user")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--qdrant-records", type=int, default=10_000)
    parser.add_argument("--no-qdrant", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

"""Vector memory: the same behaviour from the embedded store and from Qdrant.

Qdrant runs in qdrant-client's local mode; set `VECHE_TEST_QDRANT_URL` to also run every
shared test against a real server (a throwaway collection per test).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import numpy as np
import pytest

from veche.kernel.ai.vectors import (
    EmbeddedVectorStore,
    VectorFilter,
    VectorRecord,
    VectorStore,
)

DIMENSIONS = 8
QDRANT_URL = os.environ.get("VECHE_TEST_QDRANT_URL")
ALICE = uuid.UUID("00000000-0000-4000-8000-00000000000a")
BOB = uuid.UUID("00000000-0000-4000-8000-00000000000b")

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning")


def axis(index: int, *, weight: float = 1.0) -> list[float]:
    vector = [0.0] * DIMENSIONS
    vector[index] = weight
    return vector


def angled(degrees: float) -> list[float]:
    """A unit vector at `degrees` from axis 0 in the plane of axes 0 and 1."""
    vector = [0.0] * DIMENSIONS
    vector[0], vector[1] = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return vector


def seeded_vector(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIMENSIONS).astype(np.float32)
    return vector / np.linalg.norm(vector)


async def exported(store: VectorStore, filter: VectorFilter) -> dict[str, VectorRecord]:
    return {record.id: record async for record in store.export(filter)}


@pytest.fixture(params=["embedded", "qdrant-local", "qdrant-server"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    if request.param == "embedded":
        embedded = await EmbeddedVectorStore.open(tmp_path / "vectors", DIMENSIONS)
        yield embedded
        await embedded.aclose()
        return
    if request.param == "qdrant-server" and not QDRANT_URL:
        pytest.skip("set VECHE_TEST_QDRANT_URL to test against a Qdrant server")
    from qdrant_client import AsyncQdrantClient

    from veche.kernel.ai.vectors.qdrant import QdrantVectorStore

    collection = f"test_{uuid.uuid4().hex}"
    if request.param == "qdrant-local":
        client = AsyncQdrantClient(location=":memory:")
    else:
        client = AsyncQdrantClient(url=QDRANT_URL)
    qdrant = QdrantVectorStore(client, collection, DIMENSIONS)
    await qdrant.ensure_collection()
    yield qdrant
    await client.delete_collection(collection)
    await qdrant.aclose()


async def seed_two_users(store: VectorStore) -> None:
    """Alice and Bob each hold the same three vectors in two scopes of app `memory`, plus a
    record of app `notes`."""
    records = []
    for user in (ALICE, BOB):
        tag = "a" if user == ALICE else "b"
        for scope in ("agent-1", "agent-2"):
            for index in range(3):
                records.append(
                    VectorRecord(
                        id=f"{tag}-{scope}-{index}",
                        vector=axis(index),
                        app="memory",
                        scope=scope,
                        user_id=user,
                        payload={"owner": tag, "index": index, "pinned": index == 0},
                    )
                )
        records.append(
            VectorRecord(id=f"{tag}-note", vector=axis(0), app="notes", user_id=user, payload={})
        )
    await store.upsert(records)


# -- shared behaviour ---------------------------------------------------------------------------


async def test_search_ranks_nearest_first_with_cosine_scores(store: VectorStore) -> None:
    await store.upsert(
        [
            VectorRecord(id=f"at-{degrees}", vector=angled(degrees), app="memory")
            for degrees in (60, 0, 90, 30, 180)
        ]
    )

    hits = await store.search(angled(0), filter=VectorFilter(), limit=5)

    assert [hit.id for hit in hits] == ["at-0", "at-30", "at-60", "at-90", "at-180"]
    expected = [1.0, math.cos(math.radians(30)), 0.5, 0.0, -1.0]
    assert [hit.score for hit in hits] == pytest.approx(expected, abs=1e-5)
    assert hits[0].app == "memory"
    assert hits[0].scope == ""
    assert hits[0].user_id is None


async def test_unnormalised_vectors_are_normalised(store: VectorStore) -> None:
    await store.upsert([VectorRecord(id="long", vector=axis(2, weight=37.5), app="memory")])

    hits = await store.search(axis(2, weight=0.001), filter=VectorFilter())
    records = await exported(store, VectorFilter())

    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert np.asarray(records["long"].vector) == pytest.approx(axis(2), abs=1e-6)


async def test_users_never_see_each_others_records(store: VectorStore) -> None:
    await seed_two_users(store)
    alice = VectorFilter(app="memory", user_id=ALICE)

    hits = await store.search(axis(0), filter=alice, limit=100)
    assert len(hits) == 6
    assert {hit.user_id for hit in hits} == {ALICE}
    assert {hit.payload["owner"] for hit in hits} == {"a"}
    assert await store.count(alice) == 6
    records = await exported(store, alice)
    assert len(records) == 6
    assert all(record_id.startswith("a-") for record_id in records)

    assert await store.delete(alice) == 6

    assert await store.search(axis(0), filter=alice) == []
    assert await store.count(VectorFilter(user_id=BOB)) == 7
    assert await store.count(VectorFilter(user_id=ALICE)) == 1  # her note, another app


async def test_app_and_scope_filters(store: VectorStore) -> None:
    await seed_two_users(store)

    notes = await store.search(axis(0), filter=VectorFilter(app="notes"), limit=100)
    scoped = await store.search(
        axis(1), filter=VectorFilter(app="memory", user_id=BOB, scope="agent-2"), limit=100
    )
    no_scope = await store.search(axis(0), filter=VectorFilter(scope=""), limit=100)

    assert {hit.id for hit in notes} == {"a-note", "b-note"}
    assert scoped[0].id == "b-agent-2-1"
    assert {hit.id for hit in scoped} == {"b-agent-2-0", "b-agent-2-1", "b-agent-2-2"}
    assert {hit.id for hit in no_scope} == {"a-note", "b-note"}
    assert await store.search(axis(0), filter=VectorFilter(app="nowhere")) == []
    assert await store.count(VectorFilter(app="memory", scope="agent-1")) == 6


async def test_payload_equality_filter(store: VectorStore) -> None:
    await seed_two_users(store)

    pinned = await store.search(
        axis(1), filter=VectorFilter(user_id=ALICE, payload={"pinned": True}), limit=100
    )
    second = await store.search(
        axis(0), filter=VectorFilter(payload={"owner": "b", "index": 2}), limit=100
    )

    assert {hit.id for hit in pinned} == {"a-agent-1-0", "a-agent-2-0"}
    assert {hit.id for hit in second} == {"b-agent-1-2", "b-agent-2-2"}
    assert await store.count(VectorFilter(payload={"owner": "nobody"})) == 0
    assert await store.count(VectorFilter(payload={"missing": "key"})) == 0


async def test_ids_filter(store: VectorStore) -> None:
    await seed_two_users(store)

    hits = await store.search(
        axis(0), filter=VectorFilter(ids=["a-note", "b-agent-1-1", "unknown"]), limit=10
    )

    assert {hit.id for hit in hits} == {"a-note", "b-agent-1-1"}
    assert await store.count(VectorFilter(ids=[])) == 0
    assert await store.count(VectorFilter(ids=["a-note"], user_id=BOB)) == 0


async def test_min_score_and_limit(store: VectorStore) -> None:
    await store.upsert(
        [
            VectorRecord(id=f"at-{degrees}", vector=angled(degrees), app="memory")
            for degrees in (0, 20, 40, 70, 100)
        ]
    )

    close = await store.search(angled(0), filter=VectorFilter(), limit=10, min_score=0.7)
    top_two = await store.search(angled(0), filter=VectorFilter(), limit=2)

    assert [hit.id for hit in close] == ["at-0", "at-20", "at-40"]  # cos 40 deg = 0.77
    assert all(hit.score >= 0.7 for hit in close)
    assert [hit.id for hit in top_two] == ["at-0", "at-20"]


async def test_delete_by_filter_removes_exactly_that_scope(store: VectorStore) -> None:
    await seed_two_users(store)
    before = await exported(store, VectorFilter())

    removed = await store.delete(VectorFilter(app="memory", user_id=ALICE, scope="agent-1"))

    after = await exported(store, VectorFilter())
    assert removed == 3
    assert set(before) - set(after) == {"a-agent-1-0", "a-agent-1-1", "a-agent-1-2"}
    assert await store.delete(VectorFilter(app="memory", user_id=ALICE, scope="agent-1")) == 0


async def test_drop_scope(store: VectorStore) -> None:
    await seed_two_users(store)

    assert await store.drop_scope("memory", user_id=BOB, scope="agent-2") == 3
    assert await store.count(VectorFilter(user_id=BOB)) == 4
    assert await store.drop_scope("memory", user_id=BOB) == 3
    assert await store.count(VectorFilter(user_id=BOB)) == 1
    assert await store.drop_scope("memory") == 6
    assert await store.count(VectorFilter()) == 2
    with pytest.raises(ValueError, match="app"):
        await store.drop_scope("")


async def test_count(store: VectorStore) -> None:
    assert await store.count(VectorFilter()) == 0
    await seed_two_users(store)

    assert await store.count(VectorFilter()) == 14
    assert await store.count(VectorFilter(app="memory")) == 12
    assert await store.count(VectorFilter(user_id=ALICE, scope="agent-2")) == 3


async def test_export_returns_vectors_and_payloads_intact(store: VectorStore) -> None:
    payload = {"text": "the heron stood still", "tags": ["a", "b"], "nested": {"n": 1.5}}
    originals = [
        VectorRecord(
            id=f"r{i}",
            vector=seeded_vector(i),
            app="memory",
            scope="s",
            user_id=ALICE,
            payload={**payload, "i": i},
        )
        for i in range(300)  # more than one export page
    ]
    await store.upsert(originals)
    await store.upsert([VectorRecord(id="other", vector=axis(0), app="memory", user_id=BOB)])

    records = await exported(store, VectorFilter(user_id=ALICE))

    assert set(records) == {f"r{i}" for i in range(300)}
    for original in originals:
        record = records[original.id]
        assert np.asarray(record.vector) == pytest.approx(original.vector, abs=1e-6)
        assert record.payload == original.payload
        assert (record.app, record.scope, record.user_id) == ("memory", "s", ALICE)


async def test_upsert_replaces(store: VectorStore) -> None:
    await store.upsert([VectorRecord(id="x", vector=axis(0), app="memory", payload={"v": 1})])

    await store.upsert(
        [VectorRecord(id="x", vector=axis(1), app="memory", scope="s2", payload={"v": 2})]
    )

    assert await store.count(VectorFilter()) == 1
    hits = await store.search(axis(1), filter=VectorFilter())
    assert [(hit.id, hit.scope, hit.payload) for hit in hits] == [("x", "s2", {"v": 2})]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)


async def test_duplicate_ids_in_one_batch_keep_the_last(store: VectorStore) -> None:
    await store.upsert(
        [
            VectorRecord(id="x", vector=axis(0), app="memory", payload={"v": 1}),
            VectorRecord(id="x", vector=axis(3), app="memory", payload={"v": 2}),
        ]
    )

    hits = await store.search(axis(3), filter=VectorFilter())

    assert [(hit.id, hit.payload) for hit in hits] == [("x", {"v": 2})]


async def test_dimension_mismatch_raises(store: VectorStore) -> None:
    with pytest.raises(ValueError, match="dimensional"):
        await store.upsert([VectorRecord(id="x", vector=[1.0, 0.0], app="memory")])
    await store.upsert([VectorRecord(id="x", vector=axis(0), app="memory")])
    with pytest.raises(ValueError, match="dimensional"):
        await store.search([1.0] * (DIMENSIONS + 1), filter=VectorFilter())
    assert await store.count(VectorFilter()) == 1


async def test_empty_store_search_returns_nothing(store: VectorStore) -> None:
    assert await store.search(axis(0), filter=VectorFilter()) == []
    assert await store.search(axis(0), filter=VectorFilter(user_id=ALICE)) == []
    assert await exported(store, VectorFilter()) == {}
    assert await store.delete(VectorFilter()) == 0


@pytest.mark.parametrize(
    "record",
    [
        VectorRecord(id="nan", vector=[math.nan] + [0.0] * (DIMENSIONS - 1), app="memory"),
        VectorRecord(id="inf", vector=[math.inf] + [0.0] * (DIMENSIONS - 1), app="memory"),
        VectorRecord(id="zero", vector=[0.0] * DIMENSIONS, app="memory"),
        VectorRecord(id="short", vector=[1.0] * (DIMENSIONS - 1), app="memory"),
        VectorRecord(id="matrix", vector=np.ones((2, DIMENSIONS)), app="memory"),
        VectorRecord(id="text", vector=["a"] * DIMENSIONS, app="memory"),  # type: ignore[list-item]
        VectorRecord(id="no-app", vector=axis(0), app=""),
        VectorRecord(id="", vector=axis(0), app="memory"),
        VectorRecord(id="bad-payload", vector=axis(0), app="memory", payload={"x": object()}),
    ],
    ids=lambda record: record.id or "no-id",
)
async def test_malformed_records_raise_and_store_nothing(
    store: VectorStore, record: VectorRecord
) -> None:
    good = VectorRecord(id="good", vector=axis(0), app="memory")

    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        await store.upsert([good, record])

    assert await store.count(VectorFilter()) == 0


async def test_malformed_queries_raise(store: VectorStore) -> None:
    with pytest.raises(ValueError, match="NaN"):
        await store.search([math.nan] * DIMENSIONS, filter=VectorFilter())
    with pytest.raises(ValueError, match="limit"):
        await store.search(axis(0), filter=VectorFilter(), limit=0)
    with pytest.raises(ValueError, match="top-level"):
        await store.count(VectorFilter(payload={"a.b": 1}))
    with pytest.raises(ValueError, match="scalar"):
        await store.count(VectorFilter(payload={"a": [1]}))  # type: ignore[dict-item]


async def test_hits_do_not_share_the_stored_payload(store: VectorStore) -> None:
    await store.upsert(
        [VectorRecord(id="x", vector=axis(0), app="memory", payload={"tags": ["a"]})]
    )
    hit = (await store.search(axis(0), filter=VectorFilter()))[0]

    hit.payload["tags"].append("changed")

    again = (await store.search(axis(0), filter=VectorFilter()))[0]
    assert again.payload == {"tags": ["a"]}


async def test_health(store: VectorStore) -> None:
    await store.health()


# -- embedded store only: durability and several processes -----------------------------------


async def test_embedded_data_survives_a_restart(tmp_path: Path) -> None:
    first = await EmbeddedVectorStore.open(tmp_path, DIMENSIONS)
    await seed_two_users(first)
    await first.delete(VectorFilter(ids=["a-note"]))
    before = await first.search(axis(1), filter=VectorFilter(user_id=ALICE), limit=4)
    await first.aclose()

    reopened = await EmbeddedVectorStore.open(tmp_path, DIMENSIONS)
    after = await reopened.search(axis(1), filter=VectorFilter(user_id=ALICE), limit=4)

    assert after == before
    assert await reopened.count(VectorFilter()) == 13
    assert await reopened.count(VectorFilter(ids=["a-note"])) == 0
    await reopened.aclose()


async def test_embedded_path_may_name_the_file(tmp_path: Path) -> None:
    store = EmbeddedVectorStore(tmp_path / "vectors" / "minilm.db", DIMENSIONS)
    await store.upsert([VectorRecord(id="x", vector=axis(0), app="memory")])
    await store.aclose()

    assert (tmp_path / "vectors" / "minilm.db").is_file()
    with pytest.raises(RuntimeError, match="closed"):
        await store.count(VectorFilter())


async def test_embedded_rejects_another_dimension_on_reopen(tmp_path: Path) -> None:
    store = await EmbeddedVectorStore.open(tmp_path, DIMENSIONS)
    await store.aclose()

    with pytest.raises(ValueError, match="8-dimensional"):
        await EmbeddedVectorStore.open(tmp_path, DIMENSIONS * 2)


async def test_qdrant_rejects_a_collection_of_another_dimension() -> None:
    from qdrant_client import AsyncQdrantClient

    from veche.kernel.ai.vectors.qdrant import QdrantVectorStore

    client = AsyncQdrantClient(location=":memory:")
    await QdrantVectorStore(client, "memory", DIMENSIONS).ensure_collection()

    with pytest.raises(ValueError, match="8-dimensional"):
        await QdrantVectorStore(client, "memory", DIMENSIONS * 2).ensure_collection()
    await client.close()


async def test_embedded_second_instance_sees_writes_and_deletes(tmp_path: Path) -> None:
    writer = await EmbeddedVectorStore.open(tmp_path, DIMENSIONS)
    reader = await EmbeddedVectorStore.open(tmp_path, DIMENSIONS)
    assert await reader.count(VectorFilter()) == 0

    await seed_two_users(writer)
    assert await reader.count(VectorFilter()) == 14
    hits = await reader.search(axis(2), filter=VectorFilter(user_id=BOB, scope="agent-1"))
    assert hits[0].id == "b-agent-1-2"

    await writer.drop_scope("memory", user_id=BOB)
    await writer.upsert([VectorRecord(id="a-note", vector=axis(5), app="notes", user_id=ALICE)])
    assert await reader.count(VectorFilter(user_id=BOB)) == 1
    assert (await reader.search(axis(5), filter=VectorFilter(user_id=ALICE)))[0].id == "a-note"

    # The reader writes too, after the writer's changes it has not read yet.
    await writer.delete(VectorFilter(ids=["b-note"]))
    await reader.upsert([VectorRecord(id="late", vector=axis(6), app="memory")])
    assert await reader.count(VectorFilter(ids=["b-note"])) == 0
    assert await writer.count(VectorFilter(ids=["late"])) == 1
    assert await reader.count(VectorFilter()) == await writer.count(VectorFilter()) == 8
    await writer.aclose()
    await reader.aclose()


async def test_embedded_mirror_far_behind_reloads_after_tombstones_are_pruned(
    tmp_path: Path,
) -> None:
    writer = await EmbeddedVectorStore.open(tmp_path, DIMENSIONS)
    writer.tombstones_kept = 2
    reader = await EmbeddedVectorStore.open(tmp_path, DIMENSIONS)
    await writer.upsert(
        [VectorRecord(id=f"r{i}", vector=seeded_vector(i), app="memory") for i in range(20)]
    )
    assert await reader.count(VectorFilter()) == 20

    for i in range(10):
        await writer.delete(VectorFilter(ids=[f"r{i}"]))

    assert await reader.count(VectorFilter()) == 10
    assert set(await exported(reader, VectorFilter())) == {f"r{i}" for i in range(10, 20)}
    await writer.aclose()
    await reader.aclose()


async def test_embedded_concurrent_upserts_from_two_instances_lose_nothing(
    tmp_path: Path,
) -> None:
    first = await EmbeddedVectorStore.open(tmp_path, DIMENSIONS)
    second = await EmbeddedVectorStore.open(tmp_path, DIMENSIONS)

    async def write(store: EmbeddedVectorStore, prefix: str) -> None:
        for batch in range(20):
            await store.upsert(
                [
                    VectorRecord(
                        id=f"{prefix}-{batch}-{i}", vector=seeded_vector(batch * 10 + i), app="m"
                    )
                    for i in range(10)
                ]
            )

    async with anyio.create_task_group() as group:
        group.start_soon(write, first, "first")
        group.start_soon(write, second, "second")
        group.start_soon(write, first, "third")

    fresh = await EmbeddedVectorStore.open(tmp_path, DIMENSIONS)
    for store in (first, second, fresh):
        assert await store.count(VectorFilter()) == 600
        await store.aclose()


CHILD_WRITER = textwrap.dedent(
    """
    import asyncio, sys, zlib
    from pathlib import Path
    import numpy as np
    from veche.kernel.ai.vectors import EmbeddedVectorStore, VectorFilter, VectorRecord

    def vector(name):
        seed = zlib.crc32(name.encode())
        v = np.random.default_rng(seed).standard_normal(int(sys.argv[2]))
        return v / np.linalg.norm(v)

    async def main():
        store = await EmbeddedVectorStore.open(Path(sys.argv[1]), int(sys.argv[2]))
        for batch in range(20):
            ids = [f"child-{batch}-{i}" for i in range(10)]
            await store.upsert([VectorRecord(id=i, vector=vector(i), app="child") for i in ids])
            await store.delete(VectorFilter(ids=[ids[0]]))
        await store.aclose()

    asyncio.run(main())
    """
)


def expected_vector(name: str) -> np.ndarray:
    seed = zlib.crc32(name.encode())
    vector = np.random.default_rng(seed).standard_normal(DIMENSIONS)
    return vector / np.linalg.norm(vector)


async def test_embedded_second_process_writes_while_this_one_reads_and_writes(
    tmp_path: Path,
) -> None:
    store = await EmbeddedVectorStore.open(tmp_path, DIMENSIONS)
    child = subprocess.Popen(  # noqa: ASYNC220, S603 - polled below, never waited on
        [sys.executable, "-c", CHILD_WRITER, str(tmp_path), str(DIMENSIONS)],
        stderr=subprocess.PIPE,
    )
    reads = 0
    seen_from_child = 0
    batch = 0
    while child.poll() is None or batch < 20:
        if batch < 20:
            names = [f"parent-{batch}-{i}" for i in range(10)]
            await store.upsert(
                [VectorRecord(id=n, vector=expected_vector(n), app="parent") for n in names]
            )
            batch += 1
        records = await exported(store, VectorFilter(app="child"))
        seen_from_child = max(seen_from_child, len(records))
        for name, record in records.items():  # never a torn or foreign vector
            assert np.asarray(record.vector) == pytest.approx(expected_vector(name), abs=1e-5)
        if records:
            name = max(records)
            hits = await store.search(expected_vector(name), filter=VectorFilter(app="child"))
            assert hits[0].id == name
            assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        reads += 1
        await anyio.sleep(0.005)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr.decode()

    children = await exported(store, VectorFilter(app="child"))
    assert set(children) == {f"child-{b}-{i}" for b in range(20) for i in range(1, 10)}
    assert await store.count(VectorFilter(app="parent")) == 200
    fresh = await EmbeddedVectorStore.open(tmp_path, DIMENSIONS)
    assert await fresh.count(VectorFilter()) == 380
    assert reads > 0
    await fresh.aclose()
    await store.aclose()


def test_filters_are_checked_the_same_way_everywhere() -> None:
    from veche.kernel.ai.vectors.checks import check_filter

    checks: list[Callable[[], None]] = [
        lambda: check_filter(VectorFilter(ids="abc")),
        lambda: check_filter(VectorFilter(payload={"": 1})),
        lambda: check_filter(VectorFilter(payload={"x": math.nan})),
    ]
    for check in checks:
        with pytest.raises(ValueError):  # noqa: PT011
            check()

"""A connection's queue: order, heartbeats, batching, the end, and the slow-consumer limit."""

from __future__ import annotations

import asyncio

from veche.kernel.db import new_id
from veche.kernel.identity.models import User
from veche.kernel.realtime.connection import CLOSED, HEARTBEAT, Connection, Outgoing


def _connection(queue_size: int = 8) -> Connection:
    user = User(id=new_id(), email="ann@example.com", display_name="Ann", role="user")
    return Connection(user, "sse", queue_size)


def _numbers(items: list[Outgoing]) -> list[int]:
    return [item.frame["n"] for item in items]


async def test_frames_come_out_in_order_and_a_waiting_reader_wakes() -> None:
    connection = _connection()
    reader = asyncio.ensure_future(connection.next())
    await asyncio.sleep(0)
    assert not reader.done()
    connection.send({"n": 1})
    connection.send({"n": 2})
    first = await asyncio.wait_for(reader, 1)
    assert isinstance(first, Outgoing)
    assert first.frame == {"n": 1}
    assert _numbers(connection.ready(10)) == [2]
    assert connection.ready(10) == []


async def test_ready_takes_at_most_its_limit_and_stops_at_a_heartbeat() -> None:
    connection = _connection()
    for n in range(3):
        connection.send({"n": n})
    assert _numbers(connection.ready(2)) == [0, 1]
    connection.heartbeat()  # something is queued: no heartbeat is added
    assert _numbers(connection.ready(5)) == [2]
    connection.heartbeat()
    connection.send({"n": 3})
    assert connection.ready(5) == []  # the heartbeat comes first
    assert await connection.next() is HEARTBEAT
    assert _numbers(connection.ready(5)) == [3]


async def test_the_end_drops_what_is_queued_and_stays() -> None:
    connection = _connection()
    connection.send({"n": 1})
    connection.close("shutdown")
    assert not connection.send({"n": 2})
    assert await connection.next() is CLOSED
    assert await connection.next() is CLOSED  # a second reader does not hang
    assert connection.ready(5) == []
    assert connection.close_reason == "shutdown"


async def test_a_full_queue_closes_the_connection_as_a_slow_consumer() -> None:
    connection = _connection(queue_size=2)
    assert connection.send({"n": 1})
    assert connection.send({"n": 2})
    assert not connection.send({"n": 3})
    assert connection.close_reason == "slow_consumer"
    assert await connection.next() is CLOSED

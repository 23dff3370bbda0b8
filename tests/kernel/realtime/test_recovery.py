"""What a client at a given position recovers from a channel's history."""

from __future__ import annotations

import pytest

from veche.kernel.realtime.backends import recovery_from
from veche.kernel.realtime.message import Message, Position


def history(epoch: str, offsets: range) -> list[Message]:
    return [Message("room:a", epoch, offset, "message", offset) for offset in offsets]


def test_a_fresh_subscription_recovers_nothing_and_says_so() -> None:
    recovery = recovery_from("e1", 5, history("e1", range(1, 6)), None)
    assert recovery.recovered is None
    assert list(recovery.messages) == []
    assert (recovery.epoch, recovery.offset) == ("e1", 5)


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (Position("e1", 5), []),
        (Position("e1", 3), [4, 5]),
        (Position("e1", 2), [3, 4, 5]),
    ],
)
def test_a_client_gets_exactly_what_it_missed(since: Position, expected: list[int]) -> None:
    recovery = recovery_from("e1", 5, history("e1", range(3, 6)), since)
    assert recovery.recovered is True
    assert [message.offset for message in recovery.messages] == expected


@pytest.mark.parametrize(
    "since",
    [
        Position("e1", 1),  # message 2 is no longer kept
        Position("e0", 4),  # another epoch: offsets mean nothing here
        Position("e1", 9),  # ahead of the channel: not a position it ever had
        Position("e1", -1),
    ],
)
def test_anything_else_is_not_recovered(since: Position) -> None:
    recovery = recovery_from("e1", 5, history("e1", range(3, 6)), since)
    assert recovery.recovered is False
    assert list(recovery.messages) == []

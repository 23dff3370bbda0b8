"""UUIDv7 bounds: the smallest id an event emitted at a given time can have."""

from __future__ import annotations

import datetime as dt
from uuid import UUID


def uuid7_floor(moment: dt.datetime) -> UUID:
    milliseconds = max(0, int(moment.timestamp() * 1000))
    return UUID(int=(milliseconds & ((1 << 48) - 1)) << 80)

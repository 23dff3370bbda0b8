"""A benchmark-only app, never installed under `veche.apps`.

- Channels `bench:*` that any signed-in user may read (the kernel alone only has `user:`).
- Channels `benchroom:*` that any signed-in user may read and publish to from a WebSocket
  (`publish` frames go straight to the hub: no handler, no database), with presence like
  the blog's `conversation:` channels: the baseline of `bench/blog_messenger.py`.
- `POST /api/v1/bench/publish?mode=one|many&n=1000`: publishes one message on `bench:all`
  (`one`) or one on each of `bench:c0` .. `bench:c{n-1}` (`many`), each stamped with
  `time.time_ns()` just before its `kernel.realtime.publish`, so a receiver on the same
  machine computes the publish -> receive latency.
- The event `bench.tick.recorded` and the consumer `bench-counter`, which records when it
  handled each event (in this process) for `bench/events_throughput.py`.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict

from veche.kernel import AppModule, KernelDep, Manifest, api_router
from veche.kernel.events import ConsumerContext, Event, consumer
from veche.kernel.identity.models import User
from veche.kernel.realtime import ChannelPolicy

router = api_router(tags=["bench"])


def _anyone(_user: User, _channel: str) -> bool:
    return True


class Published(BaseModel):
    messages: int


@router.post("/publish", response_model=Published)
async def publish(
    kernel: KernelDep,
    mode: Literal["one", "many"] = "one",
    n: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    seq: Annotated[int, Query(ge=0)] = 0,
) -> Published:
    channels = ["bench:all"] if mode == "one" else [f"bench:c{i}" for i in range(n)]
    for channel in channels:
        await kernel.realtime.publish(channel, {"t": time.time_ns(), "s": seq}, event="tick")
    return Published(messages=len(channels))


class TickRecorded(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int
    t: int  # time.time_ns() just before emit()


class Counter:
    """What the consumer saw: (emit stamp, handled time) in ns, per event."""

    def __init__(self) -> None:
        self.stamps: list[tuple[int, int]] = []

    def reset(self) -> None:
        self.stamps = []


COUNTER = Counter()


@consumer("bench.tick.recorded", name="bench-counter")
async def count_tick(event: Event, context: ConsumerContext) -> None:
    COUNTER.stamps.append((int(event.data["t"]), time.time_ns()))


module = AppModule(
    name="bench",
    manifest=Manifest.from_package("bench_app"),
    routers=[router],
    events={"bench.tick.recorded": TickRecorded},
    consumers=[count_tick],
    # A broadcast feed: nobody needs to know who else listens, so no presence (with it,
    # 1,000 joins on one channel are a million join frames).
    channel_policies={
        "bench:": ChannelPolicy(subscribe=_anyone, presence=False),
        "benchroom:": ChannelPolicy(subscribe=_anyone, publish=_anyone),
    },
)

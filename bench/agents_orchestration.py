"""Orchestration overhead and agent-bus throughput: what plans and the bus cost beyond the
model's own answers.

    .venv/bin/python bench/agents_orchestration.py --mode plan [--iterations 30]
        [--delay-ms 0] [--repetitions 3] [--backend sqlite|postgresql-nats]
    .venv/bin/python bench/agents_orchestration.py --mode bus [--tasks 500] [--sessions 50]
        [--posters 10] [--delay-ms 0] [--repetitions 3] [--backend sqlite|postgresql-nats]

One process with role `all` (the agents app, its runner and the durable-event consumers),
driven through an in-process ASGI client, and the fake OpenAI-compatible server of the
tests answering every call: chat after `--delay-ms`, embeddings at once (a hash, no model),
so memory recall and writes cost an HTTP round trip and no model time. The fake answers by
request instead of by script: the planning call (the planner's system prompt) gets a fixed
plan, every other chat call a short text. Each repetition is a fresh app and database.

`--mode plan`: one user, agents a1..a4 with distinct capabilities, the orchestrator at
`max_parallel_tasks` 5 with thresholds no plan reaches (no approval), and
`VECHE_AGENTS__PLAN_CACHE_SECONDS=0` so every plan asks the model. Each iteration POSTs a
message without `target_agent` asking two things that match two agents (routing makes it a
`plan` task; checked), the model answers a valid plan of 10 tasks in 3 waves (t1-t5
independent; t6-t9 each need some of t1-t5; t10 needs t6-t9), and every step's chat call
gets a short text. Timed from the POST to `PLAN_COMPLETED` on the session's hub channel
(status `completed`, asserted); POST to `PLAN_CREATED` is recorded too (the plan's 3 waves,
the agents as planned, no approval and no cache are asserted there). 3 warm-up plans
first; one session for all plans, as a user would. Baseline, in the same run: the same
LLM calls made directly through `kernel.ai.llm`: one `structured(..., PlanDraft)` call
with the planner's messages, then each wave's chat calls with `asyncio.gather` (at most 5
at once). Overhead = the run's percentile minus the baseline's: routing, validation, the
estimate, storing the plan and its 10 steps, the claims, memory, history, answers, events
and advancing the plan.

That overhead includes what each step's run does as any agent call would (memory recall
and write, history, storing the answer, its stream events). The planning and scheduling
part alone is measured on the plan's critical path: walked back from the last step
through the dependency that ended last (e.g. t1-t6-t10), the seconds its steps ran, each
from its claim to its end (`started_at`, `finished_at` of the task rows, read after
`PLAN_COMPLETED`), are taken away from the plan's time, and so is the baseline's median
planning call. What remains is routing, the planning call's bookkeeping, validation,
storing the plan, getting each step claimed after its last dependency ended (the plan's
advance in that step's transaction, the wake-up, the claim), and PLAN_COMPLETED's way to
the client. It is the conservative side: a step's `finished_at` is taken before its
answer's transaction, so storing the answer and memory counts as scheduling here.

`--mode bus`: one agent with `concurrency_limit` 20; `--tasks` direct messages (with
`target_agent`) spread round-robin over `--sessions` sessions (a session runs one message
at a time, the rest queue), POSTed as fast as `--posters` concurrent clients can. One hub
connection subscribes to every session channel and counts `TASK_COMPLETED` (each must be
`completed`). Throughput = tasks / (last TASK_COMPLETED - first POST); per-task latency is
POST to its TASK_COMPLETED. Baseline, in the same run: the same number of bare
`kernel.ai.llm.chat` calls, 20 at a time (calls/s).

Backends: `sqlite`, a migrated database in a fresh temporary data dir with the embedded
SQL-log events; `postgresql-nats`, database `bench` on 127.0.0.1:5432 (user postgres,
created when missing; its `public` schema dropped and recreated, then migrated) and NATS
JetStream at nats://127.0.0.1:4222 with a stream prefix unique to the repetition (its
streams deleted afterwards).

Prints a Markdown table of the medians across repetitions and writes the raw results to
`bench/results/agents_orchestration-<mode>-<backend>-<stamp>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
from fastapi import FastAPI
from sqlalchemy import select
from starlette.requests import Request

from common import PG_URL, RESULTS, ROOT, log
from events_throughput import NATS_URL, delete_streams

sys.path.insert(0, str(ROOT))  # the tests' fake OpenAI server

from tests.fakes.openai_server import ChatReply, Endpoint, FakeOpenAI, Reply
from tests.helpers import signed_up

from veche.apps.agents import module as agents_module
from veche.apps.agents.models import Task
from veche.apps.agents.plan_run import MAX_PLANNING_TOKENS
from veche.apps.agents.planning import AgentCard, PlanDraft, PlannedTask, planner_messages, waves
from veche.apps.agents.stream import session_channel
from veche.kernel import Kernel, build_app
from veche.kernel.ai.types import Message
from veche.kernel.identity.models import User
from veche.kernel.realtime.connection import CLOSED, Connection, Outgoing
from veche.migrate import upgrade
from veche.settings import (
    AgentsSettings,
    AISettings,
    EventsSettings,
    RealtimeSettings,
    Settings,
)

PREFIX = "/api/v1/agents"
PG_DSN = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
PG_ADMIN_DSN = PG_DSN.rsplit("/", 1)[0] + "/postgres"
SYSTEM_PROMPT = "Be brief."
STEP_ANSWER = "Done: a short, plain answer to the task."
QUIET_S = 60.0  # no event for this long: the run is stuck
WARM_UPS = 3
MAX_PARALLEL = 5
BUS_CONCURRENCY = 20
TARGET_PLAN_OVERHEAD_MS = 100.0

# Distinct capabilities, so routing splits the request over two agents and every planned
# task's description matches the agent the plan names (nothing is reassigned).
AGENTS: dict[str, list[str]] = {
    "a1": ["research", "search"],
    "a2": ["writing", "summary"],
    "a3": ["translation", "language"],
    "a4": ["review", "testing"],
}
# Two parts ("then") matching a1 and a2: orchestrated, never direct.
REQUEST = (
    "Research the history of the printing press, then write a summary of it for the newsletter."
)
# 3 waves: t1-t5 need nothing; t6-t9 need some of t1-t5; t10 needs t6-t9.
PLAN: dict[str, list[dict[str, Any]]] = {
    "tasks": [
        {"id": "t1", "agent": "a1", "depends_on": [], "description": "Research the inventors."},
        {"id": "t2", "agent": "a1", "depends_on": [], "description": "Search the early presses."},
        {"id": "t3", "agent": "a3", "depends_on": [], "description": "Translation of the terms."},
        {"id": "t4", "agent": "a4", "depends_on": [], "description": "Review the sources."},
        {"id": "t5", "agent": "a2", "depends_on": [], "description": "Writing notes on Mainz."},
        {
            "id": "t6",
            "agent": "a2",
            "depends_on": ["t1", "t2"],
            "description": "Writing a summary of the findings.",
        },
        {
            "id": "t7",
            "agent": "a3",
            "depends_on": ["t3"],
            "description": "Translation of the headings into another language.",
        },
        {
            "id": "t8",
            "agent": "a4",
            "depends_on": ["t4"],
            "description": "Review the citations by testing each link.",
        },
        {
            "id": "t9",
            "agent": "a2",
            "depends_on": ["t5", "t1"],
            "description": "Writing a timeline summary.",
        },
        {
            "id": "t10",
            "agent": "a2",
            "depends_on": ["t6", "t7", "t8", "t9"],
            "description": "Writing the final summary article.",
        },
    ]
}
PLAN_TASKS = len(PLAN["tasks"])
PLAN_WAVES = [["t1", "t2", "t3", "t4", "t5"], ["t6", "t7", "t8", "t9"], ["t10"]]
PLANNER_HEAD = planner_messages("", [])[0][1][:60]


# -- the fake model --------------------------------------------------------------------------


@dataclass
class Counters:
    """The fake's call counts, in shared memory so a child process can serve the fake."""

    planning: Any  # multiprocessing.Value("q")
    chat: Any

    @classmethod
    def new(cls) -> Counters:
        return cls(multiprocessing.Value("q", 0), multiprocessing.Value("q", 0))

    @property
    def planning_calls(self) -> int:
        return int(self.planning.value)

    @property
    def chat_calls(self) -> int:
        return int(self.chat.value)


class BenchFake(FakeOpenAI):
    """The tests' fake server answering by request: the planning call (recognised by the
    planner's system prompt) gets the fixed plan, every other chat call a short text, both
    after `delay`; embeddings keep the fake's hash vectors. Nothing needs scripting, so a
    health check or any call we did not foresee cannot shift the answers."""

    def __init__(self, delay: float, counters: Counters | None = None) -> None:
        super().__init__(embedding_dimensions=16)
        self.plan_reply = ChatReply(content=json.dumps(PLAN), delay=delay)
        self.text_reply = ChatReply(content=STEP_ANSWER, delay=delay)
        self.counters = counters or Counters.new()

    async def _record(
        self, request: Request, endpoint: Endpoint | None
    ) -> tuple[Any, Reply | None]:
        body, reply = await super()._record(request, endpoint)
        if endpoint == "chat" and reply is None:
            planning = _is_planning(body)
            with self._lock:
                self.requests.clear()  # keep no bodies: a bus run makes thousands of calls
                self.counters.chat.value += 1
                self.counters.planning.value += planning
            reply = self.plan_reply if planning else self.text_reply
        return body, reply


class OutOfProcessFake:
    """`BenchFake` served by a child process: the model server stands for another machine,
    so its CPU (uvicorn, JSON, the hash embeddings) must not share this process's GIL and
    count as our overhead. The counters are shared memory."""

    embedding_dimensions = 16

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.base_url = ""
        self.counters = Counters.new()

    @contextlib.contextmanager
    def running(self) -> Iterator[OutOfProcessFake]:
        context = multiprocessing.get_context("fork")  # before any thread or loop exists
        ready: Any = context.SimpleQueue()
        stop = context.Event()
        child = context.Process(
            target=_serve_fake, args=(self.delay, self.counters, ready, stop), daemon=True
        )
        child.start()
        self.base_url = ready.get()
        try:
            yield self
        finally:
            stop.set()
            child.join(10)
            if child.is_alive():
                child.kill()


def _serve_fake(delay: float, counters: Counters, ready: Any, stop: Any) -> None:
    fake = BenchFake(delay, counters)
    with fake.running():
        ready.put(fake.base_url)
        stop.wait()


Fake = BenchFake | OutOfProcessFake


def _is_planning(body: Any) -> bool:
    if not isinstance(body, dict) or not body.get("messages"):
        return False
    first = body["messages"][0]
    return isinstance(first, dict) and str(first.get("content", "")).startswith(PLANNER_HEAD)


# -- settings, database and app --------------------------------------------------------------


def base_values(data_dir: str) -> dict[str, Any]:
    """The settings every agents benchmark process shares: role `all` on a SQLite file in
    `data_dir`, quiet logs, rate limits out of the way."""
    return {
        "_env_file": None,
        "env": "test",
        "role": "all",
        "data_dir": Path(data_dir),
        "database_url": f"sqlite+aiosqlite:///{data_dir}/bench.db",
        "secret_key": "bench-secret-key-that-is-long-enough-0123456789",
        "log_level": "warning",
        "access_log": False,
        "rate_limits": {
            "default": "1000000/minute",
            "auth": "1000/minute",
            "agents_messages": "1000000/minute",
        },
    }


def settings_for(data_dir: str, fake: Fake, args: argparse.Namespace, prefix: str) -> Settings:
    load = max(1000, 2 * args.tasks + 100)
    values: dict[str, Any] = base_values(data_dir) | {
        "llm_provider": "openai",
        "llm_base_url": fake.base_url,
        "llm_model": "fake-model",
        "llm_api_key": "sk-bench",
        "embeddings_provider": "openai",
        "embeddings_base_url": fake.base_url,
        "embeddings_model": "fake-embedding",
        "embeddings_api_key": "sk-bench",
        "ai": AISettings(embedding_dimensions=fake.embedding_dimensions),
        "agents": AgentsSettings(
            runner_poll_seconds=1.0,
            plan_cache_seconds=0,
            agent_queue_limit=load,
            user_queue_limit=load,
        ),
        "realtime": RealtimeSettings(
            max_channels=min(1000, max(32, args.sessions + 1)), queue_size=100_000
        ),
        "events": EventsSettings(stream_prefix=prefix),
    }
    if args.backend == "postgresql-nats":
        values |= {"database_url": PG_URL, "events_url": NATS_URL}
    return Settings(**values)


async def reset_postgresql() -> str:
    """A clean `bench` database (created when missing, its public schema dropped and made
    again); returns the server's version."""
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = 'bench'"):
            await admin.execute("CREATE DATABASE bench")
        version = str(await admin.fetchval("SHOW server_version"))
    finally:
        await admin.close()
    bench = await asyncpg.connect(PG_DSN)
    try:
        await bench.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await bench.close()
    return version


@contextlib.asynccontextmanager
async def fresh_app(args: argparse.Namespace, fake: Fake) -> AsyncIterator[FastAPI]:
    """A migrated, empty database and the app on it with its lifespan running (runner,
    relay and consumers: role `all`)."""
    prefix = f"bench{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="veche-orchestration-") as tmp:
        settings = settings_for(tmp, fake, args, prefix)
        try:
            if args.backend == "postgresql-nats":
                await reset_postgresql()
            await upgrade(settings)
            app: FastAPI = build_app(settings, [agents_module])
            async with app.router.lifespan_context(app):
                yield app
        finally:
            if args.backend == "postgresql-nats":
                deleted = await delete_streams(prefix)
                log(f"deleted {deleted} NATS streams of prefix {prefix}")


@dataclass(slots=True)
class Api:
    """A signed-up user talking to the app in process, and their hub connection."""

    http: httpx.AsyncClient
    kernel: Kernel
    user: User
    headers: dict[str, str]

    @classmethod
    async def signed_up(cls, http: httpx.AsyncClient, kernel: Kernel) -> Api:
        tokens = await signed_up(http, "bench@example.com", "Bench")
        async with kernel.db.unit_of_work() as session:
            user = await session.get(User, UUID(tokens["user"]["id"]))
            assert user is not None
            session.expunge(user)
        return cls(http, kernel, user, {"Authorization": f"Bearer {tokens['access_token']}"})

    async def made(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(f"{PREFIX}{path}", json=body, headers=self.headers)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def listening(self, session_ids: list[str]) -> Connection:
        connection = self.kernel.realtime.open(self.user, "bench")
        for session_id in session_ids:
            await self.kernel.realtime.subscribe(
                connection, session_channel(self.user.id, UUID(session_id))
            )
        return connection


@contextlib.asynccontextmanager
async def client(app: FastAPI) -> AsyncIterator[Api]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        yield await Api.signed_up(http, app.state.kernel)


async def next_event(connection: Connection) -> dict[str, Any]:
    """The next session event on the connection (`event_type`, `payload`, ...)."""
    while True:
        try:
            item = await asyncio.wait_for(connection.next(), QUIET_S)
        except TimeoutError:
            item = None
        if item is CLOSED or item is None:
            raise RuntimeError("the session stream ended or went quiet")
        if isinstance(item, Outgoing) and item.frame.get("type") == "message":
            data: dict[str, Any] = item.frame["data"]
            return data


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(p95 * 1000, 2),
    }


# -- mode plan ------------------------------------------------------------------------------


@dataclass(slots=True)
class PlanTiming:
    """One plan, from its POST: seconds to PLAN_CREATED and to PLAN_COMPLETED, and the
    seconds its critical path's steps ran (each from its claim to its end)."""

    created: float
    completed: float
    steps_on_path: float
    path: list[str]


async def one_plan(api: Api, url: str, connection: Connection) -> PlanTiming:
    """POST the request and follow its plan to PLAN_COMPLETED."""
    started = time.perf_counter()
    response = await api.http.post(url, json={"content": REQUEST}, headers=api.headers)
    assert response.status_code == 202, response.text
    task = response.json()["task"]
    assert task is not None, response.text
    assert task["kind"] == "plan", f"not orchestrated: {response.text}"
    plan_id = task["id"]
    created = 0.0
    while True:
        data = await next_event(connection)
        kind, payload = data["event_type"], data["payload"]
        if plan_id not in (payload.get("plan_id"), payload.get("task_id")):
            continue  # a late event of the previous plan
        if kind == "ERROR" or (kind == "TASK_COMPLETED" and payload["status"] != "completed"):
            raise RuntimeError(f"plan {plan_id}: {kind} {payload}")
        if kind == "PLAN_CREATED":
            created = time.perf_counter() - started
            assert len(payload["tasks"]) == PLAN_TASKS, payload
            assert not payload["cached"], payload
            assert payload["waves"] == PLAN_WAVES, payload["waves"]
            assert {task["assigned_by"] for task in payload["tasks"]} == {"model"}, payload
            assert payload["status"] == "running", payload  # no approval asked
        elif kind == "PLAN_COMPLETED":
            assert payload["status"] == "completed", payload
            completed = time.perf_counter() - started
            steps, path = await critical_path(api, UUID(plan_id))
            return PlanTiming(created, completed, steps, path)


async def critical_path(api: Api, plan_id: UUID) -> tuple[float, list[str]]:
    """The plan's critical path, walked back from its last step through the dependency
    that finished last, and the seconds its steps ran (claim to end, from the task rows:
    the model call, memory, history and the answer's storing, which a direct agent call
    does as well). The rest of the plan's time is planning and scheduling."""
    async with api.kernel.db.unit_of_work() as session:
        rows = (
            await session.execute(
                select(Task.step_key, Task.depends_on, Task.started_at, Task.finished_at).where(
                    Task.plan_id == plan_id, Task.kind == "step"
                )
            )
        ).all()
    steps = {row.step_key: row for row in rows}
    assert len(steps) == PLAN_TASKS, steps.keys()
    key: str | None = PLAN_WAVES[-1][-1]
    ran, path = 0.0, []
    while key is not None:
        row = steps[key]
        ran += (row.finished_at - row.started_at).total_seconds()
        path.append(key)
        needs = row.depends_on or []
        key = max(needs, key=lambda need: steps[need].finished_at) if needs else None
    return ran, path[::-1]


async def direct_plan(api: Api, cards: list[AgentCard]) -> tuple[float, float]:
    """The baseline: the plan's model calls straight through the gateway, wave by wave."""
    llm = api.kernel.ai.llm
    lanes = asyncio.Semaphore(MAX_PARALLEL)
    planner = [Message(role=role, content=text) for role, text in planner_messages(REQUEST, cards)]

    async def step(task: PlannedTask) -> None:
        async with lanes:
            await llm.chat(
                [Message.system(SYSTEM_PROMPT), Message.user(f"{REQUEST}\n\n{task.description}")],
                app="agents",
                user_id=api.user.id,
            )

    started = time.perf_counter()
    draft = await llm.structured(
        planner,
        PlanDraft,
        app="agents",
        user_id=api.user.id,
        max_tokens=MAX_PLANNING_TOKENS,
    )
    planned = time.perf_counter() - started
    by_id = {task.id: task for task in draft.tasks}
    for wave in waves(draft.tasks):
        await asyncio.gather(*(step(by_id[task_id]) for task_id in wave))
    return planned, time.perf_counter() - started


async def plan_setup(api: Api) -> tuple[str, str, list[AgentCard]]:
    """Project, agents, orchestrator config and session; (messages url, session, cards)."""
    project = await api.made("/projects", {"name": "Bench"})
    cards = []
    for name, capabilities in AGENTS.items():
        agent = await api.made(
            "/agents",
            {
                "name": name,
                "system_prompt": SYSTEM_PROMPT,
                "capabilities": capabilities,
                "concurrency_limit": MAX_PARALLEL,
            },
        )
        cards.append(
            AgentCard(
                id=UUID(agent["id"]),
                name=name,
                capabilities=tuple(capabilities),
                description=SYSTEM_PROMPT,
                model="default",
            )
        )
    response = await api.http.put(
        f"{PREFIX}/orchestrator/config",
        json={
            "max_parallel_tasks": MAX_PARALLEL,
            "approval_cost_threshold": 1_000_000,
            "approval_tasks_threshold": 20,
            "budget": 1_000_000,
        },
        headers=api.headers,
    )
    assert response.status_code == 200, response.text
    chat = await api.made(f"/projects/{project['id']}/sessions", {})
    url = f"{PREFIX}/projects/{project['id']}/sessions/{chat['id']}/messages"
    return url, chat["id"], cards


async def plan_repetition(args: argparse.Namespace, fake: Fake) -> dict[str, Any]:
    async with fresh_app(args, fake) as app, client(app) as api:
        url, session_id, cards = await plan_setup(api)
        connection = await api.listening([session_id])
        for _ in range(WARM_UPS):  # first plans load code paths and fill caches
            await one_plan(api, url, connection)
        planning_calls = fake.counters.planning_calls
        timings = [await one_plan(api, url, connection) for _ in range(args.iterations)]
        assert fake.counters.planning_calls - planning_calls == args.iterations, "a plan was cached"
        api.kernel.realtime.disconnect(connection)
        planned: list[float] = []
        direct: list[float] = []
        for _ in range(args.iterations):
            to_planned, to_done = await direct_plan(api, cards)
            planned.append(to_planned)
            direct.append(to_done)
    run_p = percentiles([timing.completed for timing in timings])
    base_p = percentiles(direct)
    created_p = percentiles([timing.created for timing in timings])
    planned_p = percentiles(planned)
    # Planning and scheduling: a plan's time beyond its planning call and the runs of its
    # critical path's steps (the planning call of the same run's baseline, its median).
    planning_call = statistics.median(planned)
    orchestration_p = percentiles(
        [timing.completed - timing.steps_on_path - planning_call for timing in timings]
    )
    steps_p = percentiles([timing.steps_on_path for timing in timings])
    return {
        "orchestrated_post_to_plan_completed": run_p,
        "baseline_direct_calls": base_p,
        "overhead_p50_ms": round(run_p["p50_ms"] - base_p["p50_ms"], 2),
        "overhead_p95_ms": round(run_p["p95_ms"] - base_p["p95_ms"], 2),
        "orchestrated_post_to_plan_created": created_p,
        "baseline_planning_call": planned_p,
        "planning_overhead_p50_ms": round(created_p["p50_ms"] - planned_p["p50_ms"], 2),
        "planning_and_scheduling": orchestration_p,
        "critical_path_steps_running": steps_p,
        "critical_paths": sorted({"-".join(timing.path) for timing in timings}),
    }


# -- mode bus -------------------------------------------------------------------------------


async def count_completions(connection: Connection, expected: int, done: dict[str, float]) -> None:
    """Record when each task's TASK_COMPLETED arrives until `expected` have."""
    while len(done) < expected:
        data = await next_event(connection)
        if data["event_type"] != "TASK_COMPLETED":
            continue
        payload = data["payload"]
        if payload["status"] != "completed":
            raise RuntimeError(f"a task did not complete: {payload}")
        done.setdefault(payload["task_id"], time.perf_counter())


async def post_all(
    api: Api, urls: list[str], agent_id: str, args: argparse.Namespace
) -> dict[str, float]:
    """POST `--tasks` messages round-robin over the sessions from `--posters` clients at
    once; when each task's POST started, by task id."""
    work = iter(range(args.tasks))
    posted: dict[str, float] = {}

    async def poster() -> None:
        for n in work:  # shared: each message is taken by one poster
            started = time.perf_counter()
            response = await api.http.post(
                urls[n % len(urls)],
                json={"content": f"question {n}: what next?", "target_agent": agent_id},
                headers=api.headers,
            )
            assert response.status_code == 202, response.text
            posted[response.json()["task"]["id"]] = started

    await asyncio.gather(*(poster() for _ in range(args.posters)))
    return posted


async def direct_calls(api: Api, calls: int) -> float:
    """The baseline: `calls` bare gateway calls, BUS_CONCURRENCY at a time; seconds."""
    lanes = asyncio.Semaphore(BUS_CONCURRENCY)

    async def call(n: int) -> None:
        async with lanes:
            await api.kernel.ai.llm.chat(
                [Message.system(SYSTEM_PROMPT), Message.user(f"question {n}: what next?")],
                app="agents",
                user_id=api.user.id,
            )

    started = time.perf_counter()
    await asyncio.gather(*(call(n) for n in range(calls)))
    return time.perf_counter() - started


async def bus_repetition(args: argparse.Namespace, fake: Fake) -> dict[str, Any]:
    async with fresh_app(args, fake) as app, client(app) as api:
        project = await api.made("/projects", {"name": "Bench"})
        agent = await api.made(
            "/agents",
            {
                "name": "worker",
                "system_prompt": SYSTEM_PROMPT,
                "concurrency_limit": BUS_CONCURRENCY,
            },
        )
        sessions = [
            (await api.made(f"/projects/{project['id']}/sessions", {}))["id"]
            for _ in range(args.sessions)
        ]
        urls = [f"{PREFIX}/projects/{project['id']}/sessions/{sid}/messages" for sid in sessions]
        connection = await api.listening(sessions)
        done: dict[str, float] = {}
        counting = asyncio.create_task(count_completions(connection, args.tasks, done))
        first = time.perf_counter()
        try:
            posted = await post_all(api, urls, agent["id"], args)
            post_s = time.perf_counter() - first
            await counting
        finally:
            counting.cancel()
        api.kernel.realtime.disconnect(connection)
        assert set(done) == set(posted), "completions do not match the posted tasks"
        total_s = max(done.values()) - first
        latencies = [done[task_id] - started for task_id, started in posted.items()]
        baseline_s = await direct_calls(api, args.tasks)
    bus_rate = args.tasks / total_s
    base_rate = args.tasks / baseline_s
    return {
        "bus_tasks_per_s": round(bus_rate, 1),
        "bus_total_s": round(total_s, 3),
        "post_per_s": round(args.tasks / post_s, 1),
        "task_latency": percentiles(latencies),
        "baseline_calls_per_s": round(base_rate, 1),
        "baseline_total_s": round(baseline_s, 3),
        "bus_share_of_baseline": round(bus_rate / base_rate, 3),
    }


# -- driver ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("fastapi", "starlette", "sqlalchemy", "aiosqlite", "asyncpg", "nats-py"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "load_average_at_start": os.getloadavg(),
    }


def median_of(rows: list[dict[str, Any]], *path: str) -> float:
    def pick(row: dict[str, Any]) -> float:
        value: Any = row
        for key in path:
            value = value[key]
        return float(value)

    return round(float(statistics.median(pick(row) for row in rows)), 2)


def plan_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    medians = {
        "baseline_p50_ms": median_of(rows, "baseline_direct_calls", "p50_ms"),
        "baseline_p95_ms": median_of(rows, "baseline_direct_calls", "p95_ms"),
        "orchestrated_p50_ms": median_of(rows, "orchestrated_post_to_plan_completed", "p50_ms"),
        "orchestrated_p95_ms": median_of(rows, "orchestrated_post_to_plan_completed", "p95_ms"),
        "overhead_p50_ms": median_of(rows, "overhead_p50_ms"),
        "overhead_p95_ms": median_of(rows, "overhead_p95_ms"),
        "planning_call_p50_ms": median_of(rows, "baseline_planning_call", "p50_ms"),
        "plan_created_p50_ms": median_of(rows, "orchestrated_post_to_plan_created", "p50_ms"),
        "planning_overhead_p50_ms": median_of(rows, "planning_overhead_p50_ms"),
        "planning_and_scheduling_p50_ms": median_of(rows, "planning_and_scheduling", "p50_ms"),
        "planning_and_scheduling_p95_ms": median_of(rows, "planning_and_scheduling", "p95_ms"),
        "path_steps_p50_ms": median_of(rows, "critical_path_steps_running", "p50_ms"),
        "path_steps_p95_ms": median_of(rows, "critical_path_steps_running", "p95_ms"),
    }
    m = medians
    print(
        f"| per {PLAN_TASKS}-task plan ({args.backend}, fake {args.delay_ms} ms) "
        "| p50 ms | p95 ms |"
    )
    print("|---|---|---|")
    print(
        f"| baseline: 1 structured + {PLAN_TASKS} chat calls, 3 waves, <= {MAX_PARALLEL} at once "
        f"| {m['baseline_p50_ms']} | {m['baseline_p95_ms']} |"
    )
    print(
        f"| orchestrated: POST to PLAN_COMPLETED | {m['orchestrated_p50_ms']} "
        f"| {m['orchestrated_p95_ms']} |"
    )
    print(f"| our overhead (difference) | {m['overhead_p50_ms']} | {m['overhead_p95_ms']} |")
    print(
        f"| of which to PLAN_CREATED: {m['plan_created_p50_ms']} vs planning call "
        f"{m['planning_call_p50_ms']} | {m['planning_overhead_p50_ms']} | |"
    )
    print(
        "| critical path: its steps running, claim to end (3 steps, model calls included) "
        f"| {m['path_steps_p50_ms']} | {m['path_steps_p95_ms']} |"
    )
    print(
        "| planning and scheduling: the rest, less the planning call "
        f"| {m['planning_and_scheduling_p50_ms']} | {m['planning_and_scheduling_p95_ms']} |"
    )
    for name, key in (
        ("all our overhead", "overhead_p50_ms"),
        ("planning and scheduling", "planning_and_scheduling_p50_ms"),
    ):
        verdict = "met" if m[key] < TARGET_PLAN_OVERHEAD_MS else "MISSED"
        print(
            f"- target (under {TARGET_PLAN_OVERHEAD_MS:.0f} ms per {PLAN_TASKS}-task plan, p50), "
            f"{name}: {verdict}"
        )
    return medians


def bus_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    medians = {
        "baseline_calls_per_s": median_of(rows, "baseline_calls_per_s"),
        "bus_tasks_per_s": median_of(rows, "bus_tasks_per_s"),
        "bus_share_of_baseline": median_of(rows, "bus_share_of_baseline"),
        "post_per_s": median_of(rows, "post_per_s"),
        "task_latency_p50_ms": median_of(rows, "task_latency", "p50_ms"),
        "task_latency_p95_ms": median_of(rows, "task_latency", "p95_ms"),
    }
    m = medians
    print(
        f"| {args.tasks} tasks, {args.sessions} sessions ({args.backend}, fake "
        f"{args.delay_ms} ms) | per s |"
    )
    print("|---|---|")
    print(
        f"| baseline: bare gateway calls, {BUS_CONCURRENCY} at once | {m['baseline_calls_per_s']} |"
    )
    print(f"| bus: first POST to last TASK_COMPLETED | {m['bus_tasks_per_s']} |")
    print(f"| bus as a share of the baseline | {m['bus_share_of_baseline']} |")
    print(f"| POSTs accepted ({args.posters} clients) | {m['post_per_s']} |")
    print(
        f"- per task, POST to TASK_COMPLETED: p50 {m['task_latency_p50_ms']} ms, "
        f"p95 {m['task_latency_p95_ms']} ms"
    )
    return medians


async def measure(args: argparse.Namespace, fake: Fake) -> tuple[list[dict[str, Any]], str | None]:
    repetition: Callable[[argparse.Namespace, Fake], Awaitable[dict[str, Any]]] = (
        plan_repetition if args.mode == "plan" else bus_repetition
    )
    rows = []
    version = await reset_postgresql() if args.backend == "postgresql-nats" else None
    for number in range(1, args.repetitions + 1):
        log(f"{args.mode}/{args.backend}: repetition {number} of {args.repetitions}")
        row = await repetition(args, fake)
        log(f"  {json.dumps(row)}")
        rows.append(row)
    return rows, version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["plan", "bus"], required=True)
    parser.add_argument("--backend", choices=["sqlite", "postgresql-nats"], default="sqlite")
    parser.add_argument("--iterations", type=int, default=30, help="plans timed (mode plan)")
    parser.add_argument("--tasks", type=int, default=500, help="messages (mode bus)")
    parser.add_argument("--sessions", type=int, default=50, help="sessions (mode bus)")
    parser.add_argument("--posters", type=int, default=10, help="concurrent POSTs (mode bus)")
    parser.add_argument("--delay-ms", type=int, default=0, help="the fake's chat delay")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument(
        "--fake",
        choices=["process", "thread"],
        default="process",
        help="serve the fake model from a child process (default) or a thread of this one",
    )
    args = parser.parse_args()
    info = machine()
    fake: Fake = (
        OutOfProcessFake(args.delay_ms / 1000)
        if args.fake == "process"
        else BenchFake(args.delay_ms / 1000)
    )
    with fake.running():
        rows, version = asyncio.run(measure(args, fake))
    medians = plan_table(rows, args) if args.mode == "plan" else bus_table(rows, args)
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"agents_orchestration-{args.mode}-{args.backend}-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "args": vars(args),
                "machine": info | {"postgresql": version},
                "plan": PLAN if args.mode == "plan" else None,
                "repetitions": rows,
                "medians": medians,
            },
            indent=2,
        )
    )
    log(f"raw results: {path}")


if __name__ == "__main__":
    main()

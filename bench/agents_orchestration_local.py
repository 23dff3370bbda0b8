"""Orchestration with the packaged local model: how long a user waits from a request to the
end of its plan when a real small model plans and answers.

    .venv/bin/python bench/agents_orchestration_local.py [--iterations 8] [--threads 1]
        [--max-tokens 64]

One process with role `all` on SQLite, the agents app with the packaged chat model
(SmolLM2-135M on llama.cpp, `--threads`, at most `--max-tokens` per step's answer; the
planning call, through the orchestrator's model profile `planner`, at most
`--planning-max-tokens`) and the packaged e5 embeddings for memory. The same four agents
and two-part request as `agents_orchestration.py --mode plan` (routing makes it a plan),
but the model writes the plan itself (grammar-constrained JSON), so its size varies; every
iteration uses a new session, as a new request would. Timed from the POST to
`PLAN_COMPLETED`, whatever the plan's status; a plan the validation refuses ends at its
`ERROR` and counts as such. Two warm-up plans first (model loading).

The model runs one call at a time, so the plan's steps queue for it even when a wave
could run in parallel. The results also carry the gateway's record of the plan's model
calls (`ai_usage`: their number, answer tokens and summed latency, which counts a step's
wait for the model too, so it can exceed the plan's time).

Prints the figures and writes the raw results to
`bench/results/agents_orchestration_local-<stamp>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import tempfile
import time
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select

from agents_orchestration import (
    PREFIX,
    REQUEST,
    Api,
    base_values,
    client,
    next_event,
    percentiles,
    plan_setup,
)
from common import RESULTS, log
from veche.apps.agents import module as agents_module
from veche.kernel import build_app
from veche.kernel.ai.models import AIUsage
from veche.kernel.db import utcnow
from veche.migrate import upgrade
from veche.settings import AgentsSettings, AISettings, LLMProfile, Settings

WARM_UPS = 2
PLAN_TIMEOUT_S = 180.0
TARGET_P95_S = 5.0


def settings_for(data_dir: str, args: argparse.Namespace) -> Settings:
    values: dict[str, Any] = base_values(data_dir) | {
        "llm_provider": "local",
        "ai": AISettings(
            max_tokens=args.max_tokens,
            local_threads=args.threads,
            profiles={"planner": LLMProfile(max_tokens=args.planning_max_tokens)},
        ),
        "agents": AgentsSettings(runner_poll_seconds=1.0, plan_cache_seconds=0),
    }
    return Settings(**values)


async def one_plan(api: Api, project_id: str) -> dict[str, Any]:
    """A new session, the request, and its events until the plan ends."""
    chat = await api.made(f"/projects/{project_id}/sessions", {})
    connection = await api.listening([chat["id"]])
    url = f"{PREFIX}/projects/{project_id}/sessions/{chat['id']}/messages"
    since = utcnow()
    started = time.perf_counter()
    response = await api.http.post(url, json={"content": REQUEST}, headers=api.headers)
    assert response.status_code == 202, response.text
    task = response.json()["task"]
    assert task["kind"] == "plan", f"not orchestrated: {response.text}"
    outcome: dict[str, Any] = {"tasks": None, "waves": None}
    try:
        async with asyncio.timeout(PLAN_TIMEOUT_S):
            while True:
                data = await next_event(connection)
                kind, payload = data["event_type"], data["payload"]
                if kind == "PLAN_CREATED":
                    outcome["created_s"] = round(time.perf_counter() - started, 3)
                    outcome["tasks"] = len(payload["tasks"])
                    outcome["waves"] = len(payload["waves"])
                elif kind == "PLAN_COMPLETED":
                    outcome["status"] = payload["status"]
                    break
                elif kind == "ERROR":
                    outcome["status"] = f"error: {payload.get('code')}"
                    break
    finally:
        api.kernel.realtime.disconnect(connection)
    outcome["seconds"] = round(time.perf_counter() - started, 3)
    async with api.kernel.db.unit_of_work() as session:
        calls = (
            await session.scalars(
                select(AIUsage).where(AIUsage.kind != "embedding", AIUsage.created_at >= since)
            )
        ).all()
    outcome["model_calls"] = len(calls)
    outcome["model_seconds"] = round(sum(call.latency_ms for call in calls) / 1000, 3)
    outcome["completion_tokens"] = sum(call.completion_tokens for call in calls)
    return outcome


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="veche-orchestration-local-") as tmp:
        settings = settings_for(tmp, args)
        await upgrade(settings)
        app: FastAPI = build_app(settings, [agents_module])
        async with app.router.lifespan_context(app), client(app) as api:
            url, _, _ = await plan_setup(api)
            project_id = url.split("/projects/")[1].split("/")[0]
            response = await api.http.put(
                f"{PREFIX}/orchestrator/config",
                json={
                    "model": "planner",
                    "max_parallel_tasks": 5,
                    "approval_cost_threshold": 1_000_000,
                    "approval_tasks_threshold": 20,
                    "budget": 1_000_000,
                },
                headers=api.headers,
            )
            assert response.status_code == 200, response.text
            for number in range(WARM_UPS):
                log(f"warm-up {number + 1}: {await one_plan(api, project_id)}")
            rows = []
            for number in range(args.iterations):
                row = await one_plan(api, project_id)
                log(f"plan {number + 1}: {row}")
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=64, help="per step's answer")
    parser.add_argument("--planning-max-tokens", type=int, default=400)
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    times = percentiles([row["seconds"] for row in rows])
    model = statistics.median(row["model_seconds"] for row in rows)
    statuses = sorted({row.get("status", "?") for row in rows})
    print("| plans | statuses | p50 ms | p95 ms | model calls' summed latency p50 s | target p95 |")
    print("|---|---|---|---|---|---|")
    verdict = "met" if times["p95_ms"] < TARGET_P95_S * 1000 else "MISSED"
    print(
        f"| {len(rows)} | {', '.join(statuses)} | {times['p50_ms']} | {times['p95_ms']} "
        f"| {model} | {TARGET_P95_S:.0f} s: {verdict} |"
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"agents_orchestration_local-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), "plans": rows, "p": times}, indent=2))
    log(f"raw results: {path}")


if __name__ == "__main__":
    main()

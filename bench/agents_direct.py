"""Direct-mode overhead: what a chat message costs beyond the model's own answer.

    .venv/bin/python bench/agents_direct.py [--messages 100] [--delay-ms 50]
        [--embeddings fake|local] [--llm fake|local] [--fake process|thread]

One process, a migrated SQLite database in a temporary directory, the agents app with its
runner, and the fake OpenAI-compatible server of the tests answering every chat call after
`--delay-ms`. For each message: POST it (in-process ASGI), then wait on the session's hub
channel until TASK_COMPLETED. That time covers the request, the queue, the runner's claim,
memory recall, history, the gateway call, storing the answer and the interaction, and the
events.

The fake server answers every chat call with a short text after `--delay-ms` and
embeds with a hash (`agents_orchestration.BenchFake`); with `--fake process` (the default)
it runs in a child process, as a model server is another machine: its CPU then does not
share this process's GIL and count as our overhead (`--fake thread`: in this process, as
before 2026-12-06).

Baseline, measured in the same run: the same number of bare gateway calls
(`kernel.ai.llm.chat`) to the same fake server with the same delay. Overhead = the run's
percentile minus the baseline's.

`--embeddings fake` embeds through the fake server too (a hash, no model), so the figure
is our own cost; `local` uses the packaged e5 model for memory (two embeddings per message:
the query for recall and the interaction stored).

`--llm local` answers with the packaged local chat model instead of the fake server (with
`--max-tokens` per answer, 64 by default, on `--threads` threads, 1 by default as
`VECHE_AI__LOCAL_THREADS`): the end-to-end time a user waits, whose P95
has its own target (under 2 s); the baseline is then a bare call to the same model.
A small model's answers are as long as it chooses, and their length decides most of the
time: `--questions same` sends "question n: what next?" each time, `--questions varied` thirty
everyday questions in one session. The results record the measured calls' prompt and
answer sizes as the gateway counted them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from agents_orchestration import BenchFake, OutOfProcessFake
from common import RESULTS, ROOT, log

sys.path.insert(0, str(ROOT))  # the tests' fake OpenAI server

from tests.fakes.openai_server import MODEL
from tests.helpers import signed_up

from veche.apps.agents import module as agents_module
from veche.apps.agents.stream import session_channel
from veche.kernel import build_app
from veche.kernel.ai.models import AIUsage
from veche.kernel.ai.types import Message
from veche.kernel.db import utcnow
from veche.kernel.identity.models import User
from veche.kernel.realtime.connection import CLOSED, Outgoing
from veche.migrate import upgrade
from veche.settings import AgentsSettings, AISettings, Settings

PREFIX = "/api/v1/agents"

# `--questions varied`: what a user might ask a small assistant, one after another in one
# session, so the answers' lengths are the model's own choice.
VARIED = [
    "What is the capital of France?",
    "Give me three words that rhyme with light.",
    "How many minutes are in a day?",
    "Suggest a name for a grey cat.",
    "What does HTTP stand for?",
    "Translate 'good morning' into Spanish.",
    "Is a tomato a fruit or a vegetable?",
    "Write a one-line slogan for a bakery.",
    "What is 17 times 3?",
    "Name a planet with rings.",
    "What should I pack for a weekend hike?",
    "Explain what a database index is, briefly.",
    "What year did the first moon landing happen?",
    "Give me a synonym for happy.",
    "How do I boil an egg?",
    "What is the boiling point of water in Fahrenheit?",
    "Recommend a book for a long train ride.",
    "What is the plural of mouse?",
    "Summarize the plot of Cinderella in one sentence.",
    "Which ocean is the largest?",
    "What is a haiku?",
    "Tell me a fun fact about octopuses.",
    "How many legs does a spider have?",
    "What colour do you get by mixing blue and yellow?",
    "Give me a tip for remembering names.",
    "What is the opposite of ancient?",
    "How long does light take to reach Earth from the Sun?",
    "Name three kinds of clouds.",
    "What is the main ingredient of guacamole?",
    "Suggest a quick stretching exercise for the desk.",
]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(p95 * 1000, 2),
    }


def settings_for(
    tmp: str,
    fake: BenchFake | OutOfProcessFake,
    embeddings: str,
    llm: str = "fake",
    max_tokens: int = 64,
    threads: int = 1,
) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "env": "test",
        "data_dir": Path(tmp),
        "database_url": f"sqlite+aiosqlite:///{tmp}/bench.db",
        "secret_key": "bench-secret-key-that-is-long-enough-0123456789",
        "log_level": "warning",
        "rate_limits": {
            "default": "100000/minute",
            "auth": "1000/minute",
            "agents_messages": "100000/minute",
        },
        "llm_provider": "openai",
        "llm_base_url": fake.base_url,
        "llm_model": MODEL,
        "llm_api_key": "sk-bench",
        "agents": AgentsSettings(runner_poll_seconds=1.0),
    }
    if llm == "local":
        values |= {
            "llm_provider": "local",
            "ai": AISettings(max_tokens=max_tokens, local_threads=threads),
        }
        del values["llm_base_url"], values["llm_model"], values["llm_api_key"]
    if embeddings == "fake":
        ai = values.get("ai", AISettings())
        values |= {
            "embeddings_provider": "openai",
            "embeddings_base_url": fake.base_url,
            "embeddings_model": "fake-embedding",
            "embeddings_api_key": "sk-bench",
            "ai": ai.model_copy(update={"embedding_dimensions": fake.embedding_dimensions}),
        }
    return Settings(**values)


def question(args: argparse.Namespace, n: int) -> str:
    if args.questions == "varied":
        return VARIED[n % len(VARIED)]
    return f"question {n}: what next?"


async def usage_since(kernel: Any, since: Any) -> dict[str, Any]:
    """What the gateway recorded of the measured messages' chat calls: the prompt and
    answer sizes and the model's own time, to tell the model's share from ours."""
    async with kernel.db.unit_of_work() as session:
        rows = (
            await session.scalars(
                select(AIUsage).where(AIUsage.kind != "embedding", AIUsage.created_at >= since)
            )
        ).all()
    if not rows:
        return {}
    return {
        "count": len(rows),
        "prompt_tokens_p50": statistics.median(row.prompt_tokens for row in rows),
        "prompt_tokens_max": max(row.prompt_tokens for row in rows),
        "completion_tokens_p50": statistics.median(row.completion_tokens for row in rows),
        "latency_ms_p50": statistics.median(row.latency_ms for row in rows),
        "latency_ms_max": max(row.latency_ms for row in rows),
        "calls": [
            [row.prompt_tokens, row.completion_tokens, row.latency_ms]
            for row in sorted(rows, key=lambda row: row.created_at)
        ],
    }


async def completed(connection: Any) -> None:
    while True:
        try:
            item = await asyncio.wait_for(connection.next(), 30.0)
        except TimeoutError:
            item = None
        if item is CLOSED or item is None:
            raise RuntimeError("the session stream ended or went quiet")
        if isinstance(item, Outgoing) and item.frame.get("type") == "message":
            data = item.frame["data"]
            if data["event_type"] == "TASK_COMPLETED":
                assert data["payload"]["status"] == "completed", data
                return


async def run(args: argparse.Namespace, fake: BenchFake | OutOfProcessFake) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="veche-direct-") as tmp:
        settings = settings_for(tmp, fake, args.embeddings, args.llm, args.max_tokens, args.threads)
        await upgrade(settings)
        app: FastAPI = build_app(settings, [agents_module])
        kernel = app.state.kernel
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
                tokens = await signed_up(http, "bench@example.com", "Bench")
                headers = {"Authorization": f"Bearer {tokens['access_token']}"}

                async def made(path: str, body: dict[str, Any]) -> dict[str, Any]:
                    response = await http.post(f"{PREFIX}{path}", json=body, headers=headers)
                    assert response.status_code == 201, response.text
                    created: dict[str, Any] = response.json()
                    return created

                project = await made("/projects", {"name": "Bench"})
                agent = await made("/agents", {"name": "bench", "system_prompt": "Be brief."})
                chat = await made(f"/projects/{project['id']}/sessions", {})
                async with kernel.db.unit_of_work() as session:
                    user = await session.get(User, UUID(tokens["user"]["id"]))
                    assert user is not None
                    session.expunge(user)
                connection = kernel.realtime.open(user, "bench")
                await kernel.realtime.subscribe(
                    connection, session_channel(user.id, UUID(chat["id"]))
                )
                url = f"{PREFIX}/projects/{project['id']}/sessions/{chat['id']}/messages"
                # Warm-up: the first message loads models and fills caches.
                for n in range(3):
                    response = await http.post(
                        url,
                        json={"content": f"warm-up {n}", "target_agent": agent["id"]},
                        headers=headers,
                    )
                    assert response.status_code == 202, response.text
                    await completed(connection)
                runs: list[float] = []
                measured_from = utcnow()
                for n in range(args.messages):
                    started = time.perf_counter()
                    response = await http.post(
                        url,
                        json={"content": question(args, n), "target_agent": agent["id"]},
                        headers=headers,
                    )
                    assert response.status_code == 202, response.text
                    await completed(connection)
                    runs.append(time.perf_counter() - started)
                kernel.realtime.disconnect(connection)
                model_calls = await usage_since(kernel, measured_from)

                bare: list[float] = []
                for n in range(args.messages):
                    started = time.perf_counter()
                    await kernel.ai.llm.chat(
                        [Message.system("Be brief."), Message.user(question(args, n))],
                        app="agents",
                    )
                    bare.append(time.perf_counter() - started)
        finally:
            await lifespan.__aexit__(None, None, None)
    run_p, bare_p = percentiles(runs), percentiles(bare)
    return {
        "messages": args.messages,
        "delay_ms": args.delay_ms if args.llm == "fake" else None,
        "fake": args.fake,
        "embeddings": args.embeddings,
        "llm": args.llm,
        "max_tokens": args.max_tokens if args.llm == "local" else None,
        "local_threads": args.threads if args.llm == "local" else None,
        "questions": args.questions,
        "direct_mode": run_p,
        "baseline_gateway_call": bare_p,
        "overhead_p50_ms": round(run_p["p50_ms"] - bare_p["p50_ms"], 2),
        "overhead_p95_ms": round(run_p["p95_ms"] - bare_p["p95_ms"], 2),
        "model_calls": model_calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--delay-ms", type=int, default=50)
    parser.add_argument("--embeddings", choices=["fake", "local"], default="fake")
    parser.add_argument("--llm", choices=["fake", "local"], default="fake")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="the local model's threads")
    parser.add_argument("--questions", choices=["same", "varied"], default="same")
    parser.add_argument("--fake", choices=["process", "thread"], default="process")
    args = parser.parse_args()
    delay = args.delay_ms / 1000
    fake = OutOfProcessFake(delay) if args.fake == "process" else BenchFake(delay)
    with fake.running():
        results = asyncio.run(run(args, fake))
    print("| per message | p50 ms | p95 ms |\n|---|---|---|")
    print(
        f"| baseline: bare gateway call | {results['baseline_gateway_call']['p50_ms']} | "
        f"{results['baseline_gateway_call']['p95_ms']} |"
    )
    print(
        f"| direct mode, POST to TASK_COMPLETED | {results['direct_mode']['p50_ms']} | "
        f"{results['direct_mode']['p95_ms']} |"
    )
    print(
        f"| our overhead (difference) | {results['overhead_p50_ms']} | "
        f"{results['overhead_p95_ms']} |"
    )
    if results["model_calls"]:
        summary = {k: v for k, v in results["model_calls"].items() if k != "calls"}
        print(f"model calls of the measured messages: {summary}")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS / f"agents_direct-{args.llm}-llm-{args.embeddings}-{args.questions}-{stamp}.json"
    path.write_text(json.dumps(results, indent=2))
    log(f"raw results: {path}")


if __name__ == "__main__":
    main()

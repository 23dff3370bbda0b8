"""Prometheus metrics of AI calls, served with the rest at `/metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CALLS = Counter(
    "veche_ai_calls_total",
    "Model calls, by app, purpose, model and outcome (ok or the error code)",
    ["app", "purpose", "model", "outcome"],
)
TOKENS = Counter(
    "veche_ai_tokens_total",
    "Tokens used, by app, model and direction (prompt or completion)",
    ["app", "model", "direction"],
)
COST = Counter(
    "veche_ai_cost_total",
    "Estimated cost in the configured price currency, by app and model",
    ["app", "model"],
)
LATENCY = Histogram(
    "veche_ai_call_seconds",
    "Time a model call took, by provider and model",
    ["provider", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
REFUSED = Counter(
    "veche_ai_budget_refusals_total",
    "Calls refused because the user's daily token budget was used up, by app",
    ["app"],
)

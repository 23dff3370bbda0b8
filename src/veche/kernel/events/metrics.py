"""Prometheus metrics of durable events, served with the rest at `/metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EMITTED = Counter("veche_events_emitted_total", "Events written to the outbox, by type", ["type"])
PUBLISHED = Counter("veche_events_published_total", "Events the relay published, by type", ["type"])
CONSUMED = Counter(
    "veche_events_consumed_total",
    "Events a consumer handled successfully, by consumer and type",
    ["consumer", "type"],
)
FAILED = Counter(
    "veche_events_failed_total",
    "Failed handler attempts, by consumer and type",
    ["consumer", "type"],
)
DEAD_LETTERED = Counter(
    "veche_events_dead_lettered_total",
    "Events moved to the dead-letter table, by consumer and type",
    ["consumer", "type"],
)
PRUNED = Counter(
    "veche_events_pruned_total",
    "Rows the retention job deleted, by table (event_outbox, event_processed)",
    ["table"],
)
LAG = Gauge(
    "veche_events_consumer_lag",
    "Published events a consumer has not handled yet",
    ["consumer"],
    multiprocess_mode="max",
)
LATENCY = Histogram(
    "veche_events_end_to_end_seconds",
    "Time from emit to the handler's commit, by consumer",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

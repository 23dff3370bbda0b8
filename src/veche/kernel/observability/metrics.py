"""Prometheus metrics of the HTTP edge and the database pool, served at `/metrics`.

Labels use route templates (`/api/v1/auth/sessions/{session_id}`), never raw paths, so a
scan of random URLs cannot blow up the series count. With several worker processes
(`PROMETHEUS_MULTIPROC_DIR` set) every process writes its samples to that directory and
`/metrics` aggregates them.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

REQUESTS = Counter(
    "veche_http_requests_total",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "veche_http_request_duration_seconds",
    "Time from request start to response end, by method and route template",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge(
    "veche_http_requests_in_flight",
    "Requests being handled right now",
    multiprocess_mode="livesum",
)
DB_POOL = Gauge(
    "veche_db_pool_connections",
    "Database pool connections by state",
    ["state"],
    multiprocess_mode="livesum",
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)


def update_pool(status: dict[str, int]) -> None:
    for state, value in status.items():
        DB_POOL.labels(state).set(value)


def render() -> tuple[bytes, str]:
    """The exposition text of this process, or of all worker processes together."""
    registry: Any = DEFAULT_REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST

"""Prometheus metrics of the realtime hub, served with the others at `/metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge(
    "veche_realtime_connections",
    "Open realtime connections, by transport",
    ["transport"],
    multiprocess_mode="livesum",
)
SUBSCRIPTIONS = Gauge(
    "veche_realtime_subscriptions",
    "Channel subscriptions held by open connections",
    multiprocess_mode="livesum",
)
DELIVERED = Counter(
    "veche_realtime_messages_delivered_total",
    "Messages queued for a connection, by transport",
    ["transport"],
)
DROPPED = Counter(
    "veche_realtime_messages_dropped_total",
    "Messages a connection lost because it was closed, by transport and reason",
    ["transport", "reason"],
)
PUBLISHED = Counter("veche_realtime_messages_published_total", "Messages published")
DELIVERY_LATENCY = Histogram(
    "veche_realtime_delivery_seconds",
    "Time from publish to queueing for a subscriber, across replicas",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

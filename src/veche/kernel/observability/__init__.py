"""Observability: structured JSON logs, Prometheus metrics, health and readiness, and
optional OpenTelemetry tracing."""

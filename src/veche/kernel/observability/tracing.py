"""Optional OpenTelemetry tracing (`pip install veche[otel]`, `VECHE_OTEL_ENABLED=true`).

Spans are exported over OTLP/HTTP to the endpoint the standard `OTEL_EXPORTER_OTLP_*`
variables name. Without the extra installed, enabling tracing is a startup error rather
than a silent no-op.
"""

from __future__ import annotations

from fastapi import FastAPI

from veche.settings import Settings


class TracingUnavailable(RuntimeError):
    pass


def tracing_problem() -> str | None:
    """Why tracing cannot be enabled here, or None when it can."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.instrumentation.fastapi
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        return f"VECHE_OTEL_ENABLED needs the 'otel' extra: pip install 'veche[otel]' ({exc.name})"
    return None


def install_tracing(app: FastAPI, settings: Settings) -> None:
    """Instrument the app when tracing is enabled; the provider is kept on
    `app.state.tracer_provider` so shutdown can flush the last spans."""
    app.state.tracer_provider = None
    if not settings.otel_enabled:
        return
    problem = tracing_problem()
    if problem:
        raise TracingUnavailable(problem)
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    app.state.tracer_provider = provider
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls="health,ready,metrics"
    )

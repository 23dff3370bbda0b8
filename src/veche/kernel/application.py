"""The application factory: a FastAPI app of the kernel plus the app modules it is given.

It imports no app: the composition root (`veche.server`) discovers them and passes their
modules in, and tests pass their own.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from veche.kernel import admin
from veche.kernel.ai.routes import router as ai_router
from veche.kernel.collector import tune_collector
from veche.kernel.errors import install_error_handlers
from veche.kernel.events.routes import router as events_admin_router
from veche.kernel.http import RequestMiddleware
from veche.kernel.identity.routes import auth_router, me_router
from veche.kernel.jobs import Scheduler, kernel_jobs
from veche.kernel.modules import AppModule, ReadinessCheck
from veche.kernel.observability import health
from veche.kernel.observability.logging import configure_logging
from veche.kernel.observability.tracing import install_tracing
from veche.kernel.openapi import build_openapi
from veche.kernel.realtime.routes import router as realtime_router
from veche.kernel.runtime import Kernel
from veche.settings import Settings

VERSION = "0.1.0"
log = structlog.get_logger("veche.app")
# What each shutdown step may take beyond the realtime shutdown timeout.
SHUTDOWN_STEP_SLACK = 10.0


async def _bounded(step: str, work: Awaitable[None], seconds: float) -> None:
    """Await one shutdown step for at most `seconds`; past that it is cancelled and logged."""
    try:
        async with asyncio.timeout(seconds):
            await work
    except TimeoutError:
        log.error("shutdown_step_timed_out", step=step, seconds=seconds)


def readiness_checks(kernel: Kernel, modules: Sequence[AppModule]) -> dict[str, ReadinessCheck]:
    checks: dict[str, ReadinessCheck] = {"database": kernel.db.ping}
    if kernel.settings.redis_url:
        checks["redis"] = kernel.limiter.check_storage
    if kernel.settings.realtime_url:
        checks["realtime"] = kernel.realtime.backend.ping
    if kernel.events.external:  # the embedded SQL log is covered by the database check
        checks["events"] = kernel.events.backend.ping
    if kernel.settings.qdrant_url:
        checks["vectors"] = kernel.ai.vectors_health
    for module in modules:
        for name, check in module.readiness.items():
            checks[f"{module.name}.{name}"] = functools.partial(check, kernel)
    return checks


def _allow_origins(app: FastAPI, origins: list[str]) -> None:
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=[
            "X-Request-ID",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "Retry-After",
        ],
    )


def _lifespan(
    kernel: Kernel, modules: Sequence[AppModule]
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    settings = kernel.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        jobs = kernel_jobs(kernel) + [job for module in modules for job in module.jobs]
        scheduler = Scheduler(kernel, jobs)
        if problems := kernel.ai.problems():
            # Refused now, with every reason, rather than at some user's first AI request.
            lines = "\n".join(f"  - {problem}" for problem in problems)
            raise RuntimeError(f"AI services are misconfigured:\n{lines}")
        await kernel.realtime.start()
        for module in modules:
            for hook in module.on_startup:
                await hook(kernel)
        if settings.role in ("worker", "all"):
            scheduler.start()
            await kernel.events.start(kernel)
        else:
            await kernel.events.start(kernel, consume=False)  # the relay only
        log.info("started", apps=[module.name for module in modules], role=settings.role)
        untune = tune_collector(settings) if settings.gc_tuning else None
        try:
            yield
        finally:
            if untune is not None:
                untune()
            # Each step is bounded: one that hangs (a backend that never answers) is logged
            # and passed over, so the process still ends.
            bound = kernel.settings.realtime.shutdown_timeout_seconds + SHUTDOWN_STEP_SLACK
            # First: open streams hold uvicorn's shutdown until they end.
            await _bounded("realtime", kernel.realtime.stop(), bound)
            await _bounded("scheduler", scheduler.stop(), bound)
            # Publishes what is left in the outbox, drains NATS.
            await _bounded("events", kernel.events.stop(), bound)
            for module in reversed(modules):
                for hook in module.on_shutdown:
                    await _bounded(f"app {module.name}", hook(kernel), bound)
            await kernel.close()
            if app.state.tracer_provider is not None:
                app.state.tracer_provider.shutdown()

    return lifespan


def build_app(settings: Settings, modules: Sequence[AppModule] = ()) -> FastAPI:
    """A Veche application serving the kernel's API and every given app module."""
    configure_logging(settings.log_level, settings.log_format)
    for module in modules:
        module.validate()
    kernel = Kernel.from_settings(settings)
    for module in modules:
        owner = f"app {module.name!r}"
        kernel.realtime.policies.register_all(module.channel_policies, owner=owner)
    kernel.events.install(modules)

    lifespan = _lifespan(kernel, modules)

    app = FastAPI(
        title="Veche",
        version=VERSION,
        description="One platform, five AI-native products on a shared kernel. "
        "Errors are RFC 9457 problem details (`application/problem+json`) with a stable "
        "`code` and the `request_id`.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.kernel = kernel
    app.state.modules = list(modules)
    app.state.readiness_checks = readiness_checks(kernel, modules)
    install_error_handlers(app)
    if settings.cors_origins:
        _allow_origins(app, settings.cors_origins)
    # Inside the request middleware, not FastAPI's `max_body_size` (which wraps every user
    # middleware): its 413 for a declared oversized body would otherwise leave as plain
    # text without a request id, and be logged as an unhandled exception.
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=settings.max_body_bytes)
    app.add_middleware(
        RequestMiddleware,
        trusted_proxies=settings.trusted_proxies,
        access_log=settings.access_log,
    )
    app.include_router(health.router)
    if settings.metrics_enabled:
        app.include_router(health.metrics_router)
    app.include_router(auth_router)
    app.include_router(me_router)
    app.include_router(admin.router)
    app.include_router(realtime_router)
    app.include_router(events_admin_router)
    app.include_router(ai_router)
    for module in modules:
        for router in module.routers:
            app.include_router(router, prefix=module.prefix)
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    install_tracing(app, settings)
    return app

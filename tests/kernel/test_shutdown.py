"""Shutdown is bounded step by step: a step that never ends (here an app's shutdown hook
waiting on nothing) is logged and passed over, and the steps after it still run."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from veche.kernel import Kernel, application, build_app
from veche.kernel.modules import AppModule, Manifest
from veche.settings import Settings


async def test_a_hanging_shutdown_hook_cannot_hold_the_process(
    clean: None,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(application, "SHUTDOWN_STEP_SLACK", 0.2)
    closed: list[str] = []

    async def hang(_kernel: Kernel) -> None:
        await asyncio.Event().wait()  # never set

    async def after(_kernel: Kernel) -> None:
        closed.append("after")

    stuck = AppModule(
        name="stuck", manifest=Manifest(name="stuck", version="0.1.0"), on_shutdown=[hang]
    )
    tidy = AppModule(
        name="tidy", manifest=Manifest(name="tidy", version="0.1.0"), on_shutdown=[after]
    )
    fast = settings.model_copy(
        update={"realtime": settings.realtime.model_copy(update={"shutdown_timeout_seconds": 0.1})}
    )
    app = build_app(fast, [stuck, tidy])
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    started = time.monotonic()
    await lifespan.__aexit__(None, None, None)
    # Hooks run in reverse order: `tidy` first, then `stuck`, cut off after its bound.
    assert closed == ["after"]
    assert time.monotonic() - started < 5
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    timed_out = [entry for entry in logged if entry["event"] == "shutdown_step_timed_out"]
    assert [entry["step"] for entry in timed_out] == ["app stuck"]

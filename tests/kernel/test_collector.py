"""Garbage-collector tuning: applied once the server has started, undone at shutdown."""

from __future__ import annotations

import gc
from collections.abc import Callable

from veche.kernel import build_app
from veche.kernel.collector import tune_collector
from veche.settings import Settings


def test_tuning_freezes_survivors_and_sets_thresholds_until_restored(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(gc_tuning=True, gc_thresholds=(12_345, 7, 3))
    before = gc.get_threshold()
    restore = tune_collector(settings)
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (12_345, 7, 3)
    finally:
        restore()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


async def test_the_server_tunes_the_collector_only_while_it_runs(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(gc_tuning=True, gc_thresholds=(20_000, 15, 5))
    app = build_app(settings)
    before = gc.get_threshold()
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (20_000, 15, 5)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


async def test_without_tuning_the_collector_is_left_alone(
    settings_factory: Callable[..., Settings],
) -> None:
    app = build_app(settings_factory())  # the suite's settings turn tuning off
    before = gc.get_threshold()
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == before

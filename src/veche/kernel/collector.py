"""Garbage-collector tuning for a long-running server process.

CPython's cyclic collector walks every tracked object of a generation. A server holds a
few hundred thousand long-lived ones (modules, routes, models, open connections), so a
full collection paused the event loop for 100-350 ms at 1,000 open streams, and the
default young threshold (700 allocations) promoted objects that live for one delivery
into the old generation, making full collections frequent. After startup this moves
everything alive into the permanent generation (`gc.freeze`, which reference counting
still frees) and raises the thresholds; shutdown undoes both.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from veche.settings import Settings


def tune_collector(settings: Settings) -> Callable[[], None]:
    """Collect what startup left, freeze the survivors, apply `settings.gc_thresholds`;
    returns the function that restores the collector as it was."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*settings.gc_thresholds)

    def restore() -> None:
        gc.set_threshold(*previous)
        gc.unfreeze()

    return restore

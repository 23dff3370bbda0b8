"""Every benchmark script still imports: they use the product's modules directly, and a
moved module must not leave one broken until somebody runs it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(path.stem for path in BENCH.glob("*.py"))


@pytest.fixture
def bench_on_path() -> Iterator[None]:
    sys.path.insert(0, str(BENCH))
    try:
        yield
    finally:
        sys.path.remove(str(BENCH))


def test_there_are_benchmarks_to_check() -> None:
    assert "agents_orchestration" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.usefixtures("bench_on_path")
def test_a_benchmark_script_imports(script: str) -> None:
    module = importlib.import_module(script)
    # The script itself, not a same-named module found elsewhere on the path.
    assert Path(str(module.__file__)).parent == BENCH

"""Benchmark-only ASGI factory: the kernel plus `bench/bench_app` (no product apps).

PYTHONPATH=bench uvicorn bench_server:create_app --factory
"""

from __future__ import annotations

from fastapi import FastAPI

from bench_app import module as bench_module
from veche.kernel import build_app
from veche.settings import load_settings


def create_app() -> FastAPI:
    return build_app(load_settings(), [bench_module])

"""The composition root: the ASGI application with every enabled app mounted.

`uvicorn veche.server:create_app --factory` and `veche serve` both build it from the
settings; `VECHE_APPS` (or `--apps`) chooses the apps, all installed ones by default.
"""

from __future__ import annotations

from fastapi import FastAPI

from veche.kernel import build_app
from veche.registry import load_modules
from veche.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    return build_app(settings, load_modules(settings.apps))

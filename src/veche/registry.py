"""The app registry: finds the app packages under `veche.apps` and loads the chosen ones.

It is part of the composition root: the only place, with `veche.server`, that imports
every app.
"""

from __future__ import annotations

import importlib
import pkgutil

import veche.apps
from veche.kernel.modules import AppModule


class UnknownApp(LookupError):
    pass


def installed_apps() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(veche.apps.__path__) if info.ispkg)


def load_modules(names: list[str] | None = None) -> list[AppModule]:
    """The modules of the named apps, or of every installed app when `names` is None."""
    available = installed_apps()
    chosen = available if names is None else names
    duplicated = sorted({name for name in chosen if chosen.count(name) > 1})
    if duplicated:
        raise UnknownApp(f"apps named more than once: {duplicated}")
    unknown = [name for name in chosen if name not in available]
    if unknown:
        known = ", ".join(available) or "none"
        raise UnknownApp(f"unknown apps {unknown}; installed: {known}")
    modules = []
    for name in chosen:
        package = importlib.import_module(f"veche.apps.{name}")
        module = getattr(package, "module", None)
        if not isinstance(module, AppModule):
            raise UnknownApp(f"veche.apps.{name} does not export `module: AppModule`")
        modules.append(module)
    return modules

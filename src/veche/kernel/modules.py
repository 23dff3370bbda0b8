"""The app module contract: what an app gives the kernel, and its manifest.

Each app package exports `module = AppModule(...)`. The kernel mounts its routers under
`/api/v1/<name>/`, runs its startup and shutdown hooks and scheduled jobs, and adds its
readiness checks to `/ready`. Its `manifest.yaml` says what it is and what it exposes; at
startup the manifest is validated and held against the routes the app really serves, so
the two can never drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

import yaml
from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.routing import Route, WebSocketRoute

from veche.kernel.events.consumers import Consumer
from veche.kernel.jobs import ScheduledJob

if TYPE_CHECKING:
    from veche.kernel.realtime import ChannelPolicy
    from veche.kernel.runtime import Kernel

Hook = Callable[["Kernel"], Awaitable[None]]
ReadinessCheck = Callable[[], Awaitable[None]]
# An app's readiness check gets the kernel, to reach what its startup hook built.
AppReadinessCheck = Callable[["Kernel"], Awaitable[None]]

# What the kernel provides today; a manifest may only require these.
KERNEL_CAPABILITIES = frozenset(
    {
        "db",
        "identity",
        "audit",
        "pagination",
        "ratelimit",
        "jobs",
        "observability",
        "events",
        "realtime",
        "ai",
    }
)
_API_ENTRY = re.compile(r"^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|WS) (/[^\s]*)$")
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){2,}$")


class ManifestError(ValueError):
    """An app's manifest is missing, invalid, or disagrees with what the app serves."""


class Exposes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api: list[str] = Field(default_factory=list, description="'METHOD /path' under the app")
    events: list[str] = Field(default_factory=list, description="event types it publishes")

    @field_validator("api")
    @classmethod
    def _api_entries(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not _API_ENTRY.match(entry):
                raise ValueError(f"{entry!r} is not 'METHOD /path'")
        return value

    @field_validator("events")
    @classmethod
    def _event_types(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not _EVENT_TYPE.match(entry):
                raise ValueError(f"{entry!r} is not an event type like 'app.entity.verb'")
        return value


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{1,31}$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
    description: str = ""
    requires: list[str] = Field(default_factory=list)
    exposes: Exposes = Field(default_factory=Exposes)
    health_check: str | None = Field(default=None, description="'GET /path' under the app")

    @field_validator("requires")
    @classmethod
    def _known_capabilities(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - KERNEL_CAPABILITIES)
        if unknown:
            known = ", ".join(sorted(KERNEL_CAPABILITIES))
            raise ValueError(f"unknown kernel capabilities {unknown}; known: {known}")
        return value

    @classmethod
    def parse(cls, text: str, source: str) -> Manifest:
        try:
            data = yaml.safe_load(text)
            return cls.model_validate(data)
        except (yaml.YAMLError, ValidationError) as exc:
            raise ManifestError(f"{source}: {exc}") from exc

    @classmethod
    def from_package(cls, package: str) -> Manifest:
        """Read `manifest.yaml` that ships inside the app's package."""
        try:
            text = resources.files(package).joinpath("manifest.yaml").read_text("utf-8")
        except FileNotFoundError as exc:
            raise ManifestError(f"{package} has no manifest.yaml") from exc
        return cls.parse(text, f"{package}/manifest.yaml")


@dataclass(slots=True)
class AppModule:
    """Everything an app contributes to a Veche process."""

    name: str
    manifest: Manifest
    routers: Sequence[APIRouter] = ()
    jobs: Sequence[ScheduledJob] = ()
    # Event type -> payload model of every event the app emits (= manifest exposes.events).
    events: Mapping[str, type[BaseModel]] = field(default_factory=dict)
    consumers: Sequence[Consumer] = ()
    # Channel prefix ('circle:') -> who may subscribe and publish; a prefix has one owner.
    channel_policies: Mapping[str, ChannelPolicy] = field(default_factory=dict)
    on_startup: Sequence[Hook] = ()
    on_shutdown: Sequence[Hook] = ()
    readiness: Mapping[str, AppReadinessCheck] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"/api/v1/{self.name}"

    def served_api(self) -> set[str]:
        """'METHOD /path' for every route the module's routers serve, relative to it."""
        served: set[str] = set()
        for router in self.routers:
            for route in router.routes:
                if isinstance(route, APIRoute | Route):
                    served.update(f"{method} {route.path}" for method in route.methods or ())
                elif isinstance(route, WebSocketRoute):
                    served.add(f"WS {route.path}")
                else:
                    raise ManifestError(
                        f"app {self.name!r}: cannot describe {type(route).__name__} routes"
                    )
        return served

    def _event_problems(self) -> list[str]:
        problems: list[str] = []
        emitted, exposed = set(self.events), set(self.manifest.exposes.events)
        if emitted - exposed:
            problems.append(f"events missing from the manifest: {sorted(emitted - exposed)}")
        if exposed - emitted:
            problems.append(f"manifest lists undeclared events: {sorted(exposed - emitted)}")
        foreign = sorted(name for name in emitted if name.split(".", 1)[0] != self.name)
        if foreign:
            problems.append(f"event types must start with {self.name + '.'!r}: {foreign}")
        for event_type, model in self.events.items():
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                problems.append(f"the payload of {event_type!r} is not a Pydantic model")
        for declared in self.consumers:
            if not isinstance(declared, Consumer):
                problems.append(f"{declared!r} is not a consumer (use @consumer)")
        return problems

    def validate(self) -> None:
        """Refuse to mount a module whose manifest disagrees with what it really is."""
        problems: list[str] = []
        if self.manifest.name != self.name:
            problems.append(f"manifest name {self.manifest.name!r} is not {self.name!r}")
        served, declared = self.served_api(), set(self.manifest.exposes.api)
        if served - declared:
            problems.append(f"routes missing from the manifest: {sorted(served - declared)}")
        if declared - served:
            problems.append(f"manifest lists routes that do not exist: {sorted(declared - served)}")
        check = self.manifest.health_check
        if check is not None and check not in served:
            problems.append(f"health_check {check!r} is not a served route")
        problems.extend(self._event_problems())
        if problems:
            raise ManifestError(f"app {self.name!r}: " + "; ".join(problems))

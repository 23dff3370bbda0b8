"""The event envelope and the errors of the events package.

An event is a fact an app states about itself (`blog.post.published`): an id (UUIDv7, so
ids sort by time), its type, the app it came from, the subject it is about, when and by
whom it happened, and its payload as JSON with the payload's schema version.
"""

from __future__ import annotations

import builtins
import datetime as dt
import re
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from veche.kernel.db import new_id, utcnow

PayloadT = TypeVar("PayloadT", bound=BaseModel)
EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){2,}$")


class EventError(ValueError):
    """An event cannot be emitted: its type is undeclared or its payload invalid."""


class UndeclaredEvent(EventError):
    pass


class InvalidEventPayload(EventError):
    pass


class Event(BaseModel):
    """The envelope every event travels in, whatever the backend."""

    model_config = ConfigDict(frozen=True)

    id: UUID = Field(default_factory=new_id)
    type: str = Field(pattern=EVENT_TYPE.pattern, max_length=200)
    source: str = Field(max_length=32, description="the app that emitted it")
    subject: str | None = Field(default=None, max_length=200)
    time: dt.datetime = Field(default_factory=utcnow)
    actor_id: UUID | None = None
    schema_version: int = Field(default=1, ge=1)
    data: dict[str, Any] = Field(default_factory=dict)

    def parse(self, model: builtins.type[PayloadT]) -> PayloadT:
        """The payload as the given contract model."""
        return model.model_validate(self.data)


def schema_version(model: type[BaseModel]) -> int:
    """A payload model's version: its `event_version` class attribute, 1 by default."""
    version = getattr(model, "event_version", 1)
    return version if isinstance(version, int) and version >= 1 else 1


def app_of(event_type: str) -> str:
    return event_type.split(".", 1)[0]

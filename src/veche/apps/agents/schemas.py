"""Request and response shapes of the agents app."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

# The tools an agent may be allowed; the names the tools package implements.
ToolName = Literal["read_file", "write_file", "list_directory", "execute_command"]
KNOWN_TOOLS: tuple[str, ...] = get_args(ToolName)
AgentStatus = Literal["ready", "busy", "error"]
AgentLifecycle = Literal["active", "draining", "deregistered"]
ExecutionMode = Literal["server", "client"]

AGENT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_SYSTEM_PROMPT = 20_000
MAX_DESCRIPTION = 2_000
MAX_CAPABILITIES = 32

# Printable text that neither starts with a space nor holds control characters.
ProjectName = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$")
]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION)]
AgentName = Annotated[str, Field(pattern=AGENT_NAME_PATTERN, max_length=64)]
SystemPrompt = Annotated[str, Field(max_length=MAX_SYSTEM_PROMPT)]
ModelProfile = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
        max_length=64,
        description="The AI purpose whose model profile the agent uses",
    ),
]
Capability = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", max_length=32)]
Tools = Annotated[list[ToolName], Field(max_length=len(KNOWN_TOOLS))]
Capabilities = Annotated[list[Capability], Field(max_length=MAX_CAPABILITIES)]
ConcurrencyLimit = Annotated[int, Field(ge=1, le=20)]
MemoryLimit = Annotated[int, Field(ge=1, le=100_000, description="interactions kept in memory")]


def _no_duplicates(value: list[str] | None) -> list[str] | None:
    if value is not None and len(set(value)) != len(value):
        raise ValueError("must not repeat an item")
    return value


def _not_boolean(value: object) -> object:
    # JSON `true` is not the integer 1, whatever Python thinks.
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


def _not_null(value: object) -> object:
    # Fields of a partial update may be left out, not set to null.
    if value is None:
        raise ValueError("must not be null; leave the field out to keep it")
    return value


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ProjectName
    description: Description = ""


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ProjectName | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None

    @field_validator("name", "description", mode="before")
    @classmethod
    def _present(cls, value: object) -> object:
        return _not_null(value)


class ProjectRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    name: str
    description: str
    created_at: dt.datetime
    updated_at: dt.datetime


class AgentConfig(BaseModel):
    """An agent's whole configuration: the body of create and of a full update (PUT)."""

    model_config = ConfigDict(extra="forbid")

    name: AgentName
    system_prompt: SystemPrompt = ""
    model: ModelProfile = "default"
    tools: Tools = Field(default_factory=list)
    capabilities: Capabilities = Field(default_factory=list)
    concurrency_limit: ConcurrencyLimit = 3
    memory_limit: MemoryLimit = 1000
    execution_mode: ExecutionMode = "server"

    @field_validator("tools", "capabilities")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        result = _no_duplicates(value)
        assert result is not None
        return result

    @field_validator("concurrency_limit", "memory_limit", mode="before")
    @classmethod
    def _integers(cls, value: object) -> object:
        return _not_boolean(value)

    def stored(self) -> dict[str, Any]:
        """The configuration as kept in a row, the name aside (it has its own column)."""
        return self.model_dump(mode="json", exclude={"name"})


class AgentPatch(BaseModel):
    """A partial update: the fields given replace the current version's."""

    model_config = ConfigDict(extra="forbid")

    name: AgentName | SkipJsonSchema[None] = None
    system_prompt: SystemPrompt | SkipJsonSchema[None] = None
    model: ModelProfile | SkipJsonSchema[None] = None
    tools: Tools | SkipJsonSchema[None] = None
    capabilities: Capabilities | SkipJsonSchema[None] = None
    concurrency_limit: ConcurrencyLimit | SkipJsonSchema[None] = None
    memory_limit: MemoryLimit | SkipJsonSchema[None] = None
    execution_mode: ExecutionMode | SkipJsonSchema[None] = None

    @field_validator("*", mode="before")
    @classmethod
    def _present(cls, value: object) -> object:
        return _not_boolean(_not_null(value))

    @field_validator("tools", "capabilities")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return _no_duplicates(value)


class AgentVersionRead(BaseModel):
    id: UUID
    key: str = Field(description="`user<id prefix>_<name>_v<version>`")
    agent_id: UUID
    version: int
    name: str
    system_prompt: str
    model: str
    tools: list[str]
    capabilities: list[str]
    concurrency_limit: int
    memory_limit: int
    execution_mode: ExecutionMode
    created_at: dt.datetime


class AgentRead(BaseModel):
    id: UUID
    key: str = Field(description="The current version's key")
    name: str
    status: AgentStatus
    lifecycle: AgentLifecycle = Field(
        description="On the agent bus: `active` takes work, `draining` finishes what it has "
        "and takes nothing new, `deregistered` has drained"
    )
    version: int = Field(description="The current version's number")
    system_prompt: str
    model: str
    tools: list[str]
    capabilities: list[str]
    concurrency_limit: int
    memory_limit: int
    execution_mode: ExecutionMode
    created_at: dt.datetime
    updated_at: dt.datetime

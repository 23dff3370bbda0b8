"""The gateway's vocabulary: messages, tools, requests, completions and stream events.

Providers translate these to and from their own wire format; apps only ever see these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


class ToolCall(BaseModel):
    """A function call the model asked for; `arguments` is the raw JSON text it produced."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as an object; raises `ValueError` when the model wrote bad JSON."""
        value = orjson.loads(self.arguments or "{}")
        if not isinstance(value, dict):
            raise ValueError("tool arguments are not a JSON object")
        return value


class Message(BaseModel):
    """One chat message. User input always travels as a `user` message, never in `system`."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def system(cls, content: str) -> Message:
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str) -> Message:
        return cls(role="user", content=content)

    @classmethod
    def assistant(cls, content: str | None, tool_calls: tuple[ToolCall, ...] = ()) -> Message:
        return cls(role="assistant", content=content, tool_calls=tool_calls)

    @classmethod
    def tool(cls, tool_call_id: str, content: str) -> Message:
        return cls(role="tool", tool_call_id=tool_call_id, content=content)


class Tool(BaseModel):
    """A function the model may call: a name, what it does, and a JSON Schema for arguments."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})

    @classmethod
    def from_model(cls, name: str, description: str, model: type[BaseModel]) -> Tool:
        return cls(name=name, description=description, parameters=model.model_json_schema())


ToolChoice = Literal["auto", "none", "required"] | str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """Everything a provider needs for one call, already resolved from the purpose's profile."""

    messages: tuple[Message, ...]
    model: str
    temperature: float
    max_tokens: int
    timeout_seconds: float
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    # Structured output: the JSON Schema the reply must satisfy, and a name for it.
    response_schema: dict[str, Any] | None = None
    schema_name: str = "result"


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Of the prompt tokens, those the model did not read again (its cache held them).
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished reply: text and/or tool calls, why it stopped, and what it cost."""

    content: str | None
    model: str
    finish_reason: FinishReason = "stop"
    tool_calls: tuple[ToolCall, ...] = ()
    usage: TokenUsage = field(default_factory=TokenUsage)

    def as_message(self) -> Message:
        """The reply as an assistant message, to send back with tool results."""
        return Message.assistant(self.content, self.tool_calls)


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of streamed text. A stream ends with one `Completion` holding the whole reply."""

    text: str


StreamEvent = TextDelta | Completion

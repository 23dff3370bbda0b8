"""Prompt templates: versioned Jinja2 files per app, rendered in a sandbox.

An app keeps its templates in a `prompts/` folder of its package, one file per version:
`prompts/<name>.v<N>.j2` (e.g. `teacher.v2.j2`). `render(name)` takes the highest version,
`render(name, version=1)` pins one. Undefined variables are errors, and templates run in
Jinja2's sandbox, so a template cannot reach Python internals.

Templates hold instructions and trusted context only. What a user typed is never a
template variable: `messages()` puts it in its own `user` message after the rendered
system instructions, so it stays data the model reads, not instructions it obeys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from veche.kernel.ai.types import Message

_FILE = re.compile(r"^(?P<name>[a-z][a-z0-9_-]{0,63})\.v(?P<version>[1-9][0-9]{0,3})\.j2$")


class PromptError(LookupError):
    """A prompt is missing, or its template failed to render (a programming error)."""


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    name: str
    version: int
    text: str

    @property
    def label(self) -> str:
        """`name@vN`, recorded with the call's usage."""
        return f"{self.name}@v{self.version}"


class PromptLibrary:
    """The templates of one folder (usually an app's `prompts/`), loaded once."""

    def __init__(self, sources: Mapping[tuple[str, int], str], owner: str = "") -> None:
        self._owner = owner
        self._env = ImmutableSandboxedEnvironment(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._templates = {key: self._env.from_string(text) for key, text in sources.items()}
        self._latest: dict[str, int] = {}
        for name, version in self._templates:
            self._latest[name] = max(version, self._latest.get(name, 0))

    @classmethod
    def from_package(cls, package: str, folder: str = "prompts") -> PromptLibrary:
        """Every `<name>.v<N>.j2` file in the package's folder (none: an empty library)."""
        root = resources.files(package).joinpath(folder)
        return cls(_read_folder(root) if root.is_dir() else {}, owner=package)

    def names(self) -> dict[str, list[int]]:
        """Each prompt with its versions, oldest first."""
        found: dict[str, list[int]] = {}
        for name, version in sorted(self._templates):
            found.setdefault(name, []).append(version)
        return found

    def render(self, name: str, /, version: int | None = None, **variables: Any) -> RenderedPrompt:
        """The named prompt (its latest version unless pinned) filled with `variables`."""
        # `name` is positional-only: `name` is also a common template variable.
        chosen = self._latest.get(name) if version is None else version
        template = self._templates.get((name, chosen)) if chosen is not None else None
        if template is None or chosen is None:
            where = f" in {self._owner}" if self._owner else ""
            raise PromptError(f"no prompt {name!r} version {version or 'latest'}{where}")
        try:
            text = template.render(**variables).strip()
        except TemplateError as exc:
            raise PromptError(f"prompt {name}@v{chosen} failed to render: {exc}") from exc
        return RenderedPrompt(name=name, version=chosen, text=text)

    def messages(
        self,
        name: str,
        /,
        *,
        user_input: str | None = None,
        history: Sequence[Message] = (),
        version: int | None = None,
        **variables: Any,
    ) -> tuple[RenderedPrompt, list[Message]]:
        """The rendered instructions as the system message, then the conversation so far,
        then the user's input as its own message."""
        prompt = self.render(name, version, **variables)
        messages = [Message.system(prompt.text), *history]
        if user_input is not None:
            messages.append(Message.user(user_input))
        return prompt, messages


def _read_folder(root: Traversable) -> dict[tuple[str, int], str]:
    sources: dict[tuple[str, int], str] = {}
    for entry in root.iterdir():
        match = _FILE.match(entry.name)
        if match is None or not entry.is_file():
            continue
        key = (match["name"], int(match["version"]))
        sources[key] = entry.read_text(encoding="utf-8")
    return sources

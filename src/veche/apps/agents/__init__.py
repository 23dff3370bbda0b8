"""The agents app: the personal multi-agent AI platform.

In progress. What exists: projects, each with a private workspace directory; agents with
validated, versioned configurations; one scoping helper (`repository.Scoped`) that confines
every query to the caller's own rows; and `veche.apps.agents.tools`, the tools an agent runs
inside its project's workspace (files and commands, confined and isolated). Worker spaces,
approvals, memory, chat and the session stream come next.
"""

from __future__ import annotations

from veche.apps.agents import runtime
from veche.apps.agents.routes import router
from veche.apps.agents.stream import CHANNEL_PREFIX, SESSION_POLICY
from veche.kernel import AppModule, Manifest

module = AppModule(
    name="agents",
    manifest=Manifest.from_package("veche.apps.agents"),
    routers=[router],
    channel_policies={CHANNEL_PREFIX: SESSION_POLICY},
    on_startup=[runtime.start],
    on_shutdown=[runtime.stop],
)

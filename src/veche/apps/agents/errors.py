"""The agents app's expected failures. Another user's project or agent is reported exactly
like one that does not exist, so ids reveal nothing across accounts."""

from __future__ import annotations

from veche.kernel import Conflict, NotFound


class ProjectNotFound(NotFound):
    code = "agents.project_not_found"
    title = "Project not found"


class AgentNotFound(NotFound):
    code = "agents.agent_not_found"
    title = "Agent not found"


class AgentVersionNotFound(NotFound):
    code = "agents.agent_version_not_found"
    title = "Agent version not found"


class ProjectNameTaken(Conflict):
    code = "agents.project_name_taken"
    title = "Project name taken"


class AgentNameTaken(Conflict):
    code = "agents.agent_name_taken"
    title = "Agent name taken"

"""The agents app's expected failures. Another user's project or agent is reported exactly
like one that does not exist, so ids reveal nothing across accounts."""

from __future__ import annotations

from veche.kernel import BadRequest, Conflict, NotFound
from veche.kernel.errors import ServiceUnavailable, TooManyRequests


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


# -- chat ---------------------------------------------------------------------------------


class SessionNotFound(NotFound):
    code = "agents.session_not_found"
    title = "Session not found"


class ToolCallNotFound(NotFound):
    code = "agents.tool_call_not_found"
    title = "Tool call not found"


class SessionBusy(Conflict):
    code = "agents.session_busy"
    title = "The session is processing another message"


class ToolCallClosed(Conflict):
    code = "agents.tool_call_closed"
    title = "The tool call is no longer waiting for a result"


class AgentUnavailable(ServiceUnavailable):
    code = "agents.agent_unavailable"
    title = "The agent is unavailable"


class SpaceNotFound(NotFound):
    """The project exists but this process holds no worker space for it (spaces are made on
    first use and are per process)."""

    code = "agents.space_not_found"
    title = "No worker space for this project in this process"


class SpaceBusy(Conflict):
    code = "agents.space_busy"
    title = "The worker space has a task running"


class MemorySearchNeedsProject(BadRequest):
    """Memory is kept per agent and project; a similarity search runs in one project."""

    code = "agents.memory_project_required"
    title = "A memory search needs a project"


class MemoryTimeRangeInvalid(BadRequest):
    code = "agents.memory_time_range_invalid"
    title = "'since' must be before 'until'"


# -- approvals ----------------------------------------------------------------------------


class ApprovalNotFound(NotFound):
    code = "agents.approval_not_found"
    title = "Approval request not found"


class ApprovalRuleNotFound(NotFound):
    code = "agents.approval_rule_not_found"
    title = "Approval rule not found"


class ApprovalNotPending(Conflict):
    """The request was already decided (by the user, a batch, the sweep or the system)."""

    code = "agents.approval_not_pending"
    title = "The approval request is no longer pending"


class ApprovalExpired(Conflict):
    code = "agents.approval_expired"
    title = "The approval request timed out"


class ApprovalRuleLimit(Conflict):
    code = "agents.approval_rule_limit"
    title = "Too many approval rules in this project"


class ApprovalRuleInvalid(BadRequest):
    status = 422
    code = "agents.approval_rule_invalid"
    title = "The approval rule is not valid"


class ApprovalReasonRequired(BadRequest):
    status = 422
    code = "agents.approval_reason_required"
    title = "A rejection needs a reason"


# -- the agent bus and the orchestrator ---------------------------------------------------


class QueueFull(TooManyRequests):
    """Backpressure: the agent's (or the user's) queue holds as much as it may."""

    code = "agents.queue_full"
    title = "The queue is full"


class AgentNotAccepting(Conflict):
    code = "agents.agent_deregistered"
    title = "The agent is deregistered or draining and takes no new work"


class NoAgents(Conflict):
    code = "agents.no_agents"
    title = "No agent can take this message"


class PlanNotFound(NotFound):
    code = "agents.plan_not_found"
    title = "Plan not found"


class PlanClosed(Conflict):
    code = "agents.plan_closed"
    title = "The plan has already ended"

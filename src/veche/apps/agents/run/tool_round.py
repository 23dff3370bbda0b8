"""A run's tool calls: each server-side call passes the approval gate and runs in the
project's workspace; an agent in client mode asks the user's machine and pauses until it
answers. Results go back into the conversation, clipped."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from veche.apps.agents.approvals import ApprovalService
from veche.apps.agents.models import Approval, ClientToolCall, Project
from veche.apps.agents.repository import ChatQueries, RunnerQueries
from veche.apps.agents.run.base import Failed, RunBase, Stopped, clip, dump
from veche.apps.agents.spaces import AgentSnapshot
from veche.apps.agents.stream import EventType
from veche.apps.agents.tools import Toolbox, ToolError, Workspace, assess_risk, tool_specs
from veche.kernel import new_id, utcnow
from veche.kernel.ai.types import Message, Tool, ToolCall


def tools_for(agent: AgentSnapshot) -> list[Tool]:
    # Building the specs renders every tool's JSON schema: once per set of tools, not per run.
    return list(_tools_named(frozenset(agent.tools))) if agent.tools else []


@functools.lru_cache(maxsize=64)
def _tools_named(allowed: frozenset[str]) -> tuple[Tool, ...]:
    return tuple(
        Tool(name=spec.name, description=spec.description, parameters=spec.parameters)
        for spec in tool_specs()
        if spec.name in allowed
    )


def unanswered(messages: list[Message]) -> list[ToolCall]:
    """The tool calls of the last assistant message that have no result yet."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.role == "assistant":
            if not message.tool_calls:
                return []
            answered = {m.tool_call_id for m in messages[index + 1 :] if m.role == "tool"}
            return [call for call in message.tool_calls if call.id not in answered]
    return []


class ToolRound(RunBase):
    """The tool-call part of a run."""

    async def _tool_round(
        self, agent: AgentSnapshot, project: Project, pending: list[ToolCall]
    ) -> bool:
        """Answer the pending tool calls in order; True when the run must pause."""
        if agent.execution_mode == "client":
            return await self._client_round(pending)
        workspace = Workspace(self.runtime.workspaces.path(project.workspace))
        for call in pending:
            content = await self._server_call(agent, workspace, call)
            if content is None:
                return True
            self.state["messages"].append(Message.tool(call.id, content).model_dump(mode="json"))
            await self._save()
        return False

    async def _server_call(
        self, agent: AgentSnapshot, workspace: Workspace, call: ToolCall
    ) -> str | None:
        """The result text of one call, or None when it waits for the user's decision."""
        if call.name not in agent.tools:
            return dump({"error": "tool.not_allowed", "detail": f"{call.name!r} is not enabled"})
        try:
            arguments = call.parsed_arguments()
        except ValueError:
            return dump({"error": "tool.invalid_arguments", "detail": "arguments are not JSON"})
        approval = await self._decision(workspace, call, arguments)
        if approval is None or approval.status == "pending":
            return None
        if approval.status != "approved":
            self.state["rejections"] = self.state.get("rejections", 0) + 1
            if self.state["rejections"] > self.settings.max_rejected_retries:
                raise Failed(
                    "agents.tool_rejected",
                    f"The tool call was rejected {self.state['rejections']} times",
                )
            return dump(
                {
                    "error": f"approval.{approval.status}",
                    "detail": approval.reason or f"The user's approval was {approval.status}",
                    "retries_left": self.settings.max_rejected_retries - self.state["rejections"],
                }
            )
        await self._publish(
            EventType.TASK_PROGRESS,
            {"stage": "tool_running", "tool": call.name, "call_id": call.id},
        )
        toolbox = Toolbox(workspace, isolation=self.runner.isolation)
        try:
            result = await toolbox.run(call.name, arguments)
            content = dump(result.model_dump(mode="json"))
            ok = True
        except ToolError as error:
            content = dump({"error": error.code, "detail": error.detail or error.title})
            ok = False
        await self._publish(
            EventType.TASK_PROGRESS,
            {"stage": "tool_result", "tool": call.name, "call_id": call.id, "ok": ok},
        )
        return clip(content)

    async def _decision(
        self, workspace: Workspace, call: ToolCall, arguments: dict[str, Any]
    ) -> Approval | None:
        """The approval of this call, asking for one (and pausing) if there is none yet."""
        async with self.kernel.db.unit_of_work() as session:
            service = self._approvals(session)
            existing = [a for a in await service.for_task(self.task.id) if a.call_id == call.id]
            if existing:
                latest = max(existing, key=lambda approval: approval.created_at)
                if latest.status == "pending":
                    await self._pause(session, "waiting_approval")
                return latest
            risk = assess_risk(call.name, arguments, workspace=workspace)
            approval = await service.gate(
                task=self.task,
                call_id=call.id,
                tool=call.name,
                arguments=arguments,
                risk=risk,
                reasons=[f"{call.name} is {risk.name}"],
                attempt=self.state.get("rejections", 0) + 1,
            )
            if approval.status == "pending":
                await self._pause(session, "waiting_approval")
            return approval

    async def _pause(self, session: Any, status: str) -> None:
        """Leave `running` for a waiting state in `session`'s transaction."""
        if not await RunnerQueries(session).save(
            self.task.id, utcnow(), state=self.state, status=status
        ):
            raise Stopped  # cancelled meanwhile: the transaction rolls back

    async def _client_round(self, pending: list[ToolCall]) -> bool:
        async with self.kernel.db.unit_of_work() as session:
            calls = {
                row.call_id: row
                for row in await ChatQueries(session, self.user_id).tool_calls(self.task.id)
            }
        missing = [call for call in pending if call.id not in calls]
        if missing:
            await self._request_client_calls(missing)
            return True
        for call in pending:
            row = calls[call.id]
            if row.status == "requested":  # a wake-up ahead of the result: wait again
                async with self.kernel.db.unit_of_work() as session:
                    await self._pause(session, "waiting_tool")
                return True
            if row.status == "completed":
                content = clip(dump(row.result))
            elif row.status == "expired":
                content = dump(
                    {"error": "tool.timeout", "detail": "The user's machine did not answer in time"}
                )
            else:
                raise Stopped
            self.state["messages"].append(Message.tool(call.id, content).model_dump(mode="json"))
        await self._save()
        return False

    async def _request_client_calls(self, calls: list[ToolCall]) -> None:
        now = utcnow()
        expires = now + dt.timedelta(seconds=self.settings.client_tool_timeout_seconds)
        rows = []
        async with self.kernel.db.unit_of_work() as session:
            for call in calls:
                try:
                    arguments = call.parsed_arguments()
                except ValueError:
                    arguments = {"raw": call.arguments[:2000]}
                row = ClientToolCall(
                    id=new_id(),
                    user_id=self.user_id,
                    project_id=self.task.project_id,
                    session_id=self.task.session_id,
                    task_id=self.task.id,
                    call_id=call.id,
                    tool=call.name,
                    arguments=arguments,
                    status="requested",
                    created_at=now,
                    expires_at=expires,
                )
                session.add(row)
                rows.append(row)
            await self._pause(session, "waiting_tool")
        for row in rows:
            await self._publish(
                EventType.TOOL_CALL_REQUESTED,
                {
                    "tool_call_id": str(row.id),
                    "call_id": row.call_id,
                    "tool": row.tool,
                    "arguments": row.arguments,
                    "expires_at": row.expires_at.isoformat(),
                },
            )

    def _approvals(self, session: Any) -> ApprovalService:
        return ApprovalService(
            session, self.user_id, self.settings, self.runtime.events, self.runtime.wake
        )

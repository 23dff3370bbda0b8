"""Approvals: the user's say over the tool calls their agents make.

`ApprovalService.gate` is where the runner asks whether a call may run. The user's policy
and standing rules decide; every call leaves an `Approval` row (auto-approved ones too), so
the history is complete. A call that needs the user pauses its task: the row is `pending`
with a deadline by risk, `APPROVAL_REQUIRED` goes to the session stream, and the task goes
on once the user confirms or rejects it, a batch or new rule covers it, or the deadline
passes (`approval_sweep.sweep_approvals`). Rows are the record: a pending request and its
paused task survive a restart because nothing about them lives only in memory. Docs:
docs/agents-approvals.md.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents.approval_policy import (
    RULE_TOOLS,
    needs_confirmation,
    normalize_pattern,
    rule_covers,
    timeout_for,
)
from veche.apps.agents.errors import (
    ApprovalExpired,
    ApprovalNotFound,
    ApprovalNotPending,
    ApprovalReasonRequired,
    ApprovalRuleInvalid,
    ApprovalRuleLimit,
    ApprovalRuleNotFound,
    ProjectNotFound,
    SessionNotFound,
)
from veche.apps.agents.models import (
    Approval,
    ApprovalPolicy,
    ApprovalRule,
    ChatSession,
    Project,
    Task,
)
from veche.apps.agents.repository import ApprovalQueries
from veche.apps.agents.stream import EventType, SessionEvents
from veche.apps.agents.tools.risk import Risk
from veche.kernel import new_id, utcnow
from veche.kernel.db import on_outcome
from veche.settings import AgentsSettings

Wake = Callable[[UUID], None]
ApprovalStatus = Literal["pending", "approved", "rejected", "expired", "cancelled"]
PolicyMode = Literal["always", "risky", "never"]
Threshold = Literal["LOW", "MEDIUM", "HIGH"]
RuleScope = Literal["session", "project"]

STATUSES: tuple[str, ...] = ("pending", "approved", "rejected", "expired", "cancelled")
# Who decided: a person (`user`, or `batch` for a batch or a newly granted rule), the
# gate at request time (`policy`, `rule`), the sweep (`timeout`) or the app (`system`).
AUTOMATIC = ("policy", "rule")
MAX_REASON = 2000
MAX_RULES_PER_PROJECT = 100
MAX_BATCH_IDS = 100
TIMED_OUT = "timed out"
SWEEP_BATCH = 500
RESPONSE_TIME_SAMPLE = 10_000

DEFAULT_POLICY = {"mode": "risky", "threshold": "MEDIUM", "auto_approve_low": True}


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skipped:
    approval_id: UUID
    status: str


@dataclass(slots=True)
class BatchResult:
    resolved: list[Approval] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    rule: ApprovalRule | None = None


@dataclass(frozen=True, slots=True)
class ApprovalMetrics:
    total: int
    auto_approved: int
    requested: int
    pending: int
    approved: int
    rejected: int
    expired: int
    cancelled: int
    approval_rate: float | None
    rejection_rate: float | None
    timeout_rate: float | None
    response_time_avg_seconds: float | None
    response_time_median_seconds: float | None


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def resolved_payload(approval: Approval) -> dict[str, Any]:
    return {
        "approval_id": str(approval.id),
        "task_id": str(approval.task_id),
        "status": approval.status,
        "decided_by": approval.decided_by,
        "reason": approval.reason,
    }


def wake_after_commit(db: AsyncSession, wake: Wake, task_id: UUID) -> None:
    """Tell the runner the task may go on, once `db` commits (never before: the runner
    must find the decision in the database)."""
    on_outcome(db, committed=lambda: wake(task_id))


def _announce_resolved(
    db: AsyncSession, events: SessionEvents, wake: Wake, approval: Approval
) -> None:
    """APPROVAL_RESOLVED on the session stream and a wake for the task, both after commit."""
    payload = resolved_payload(approval)
    events.after_commit(
        db, approval.user_id, approval.session_id, EventType.APPROVAL_RESOLVED, payload
    )
    wake_after_commit(db, wake, approval.task_id)


# -- the service --------------------------------------------------------------------------


class ApprovalService:
    """One user's approvals: the runner's gate, and the decisions the user makes."""

    def __init__(
        self,
        db: AsyncSession,
        user_id: UUID,
        settings: AgentsSettings,
        events: SessionEvents,
        wake: Wake,
    ) -> None:
        self.db = db
        self.user_id = user_id
        self.settings = settings
        self.events = events
        self.wake = wake
        self.queries = ApprovalQueries(db, user_id)

    # -- the runner's side ---------------------------------------------------------------

    async def gate(
        self,
        *,
        task: Task,
        call_id: str,
        tool: str,
        arguments: dict[str, Any],
        risk: Risk,
        reasons: list[str],
        attempt: int,
    ) -> Approval:
        """Decide whether a call may run and record the decision.

        `approved`: run it now. `rejected` (decided_by `system`): the call was revised more
        often than `max_rejected_retries` allows. `pending`: pause the task until the row
        is resolved; APPROVAL_REQUIRED goes out after the commit.
        """
        if task.user_id != self.user_id:
            raise ValueError("the task belongs to another user")
        now = utcnow()
        approval = Approval(
            id=new_id(),
            user_id=self.user_id,
            project_id=task.project_id,
            session_id=task.session_id,
            task_id=task.id,
            agent_id=task.agent_id,
            call_id=call_id,
            tool=tool,
            arguments=dict(arguments),
            risk=risk.name,
            risk_reasons=list(reasons),
            attempt=attempt,
            created_at=now,
            expires_at=now,
        )
        policy = await self.policy()
        if attempt > self.settings.max_rejected_retries + 1:
            self._settle(approval, "rejected", "system", "too many rejected attempts", now)
        elif not needs_confirmation(policy.mode, policy.threshold, policy.auto_approve_low, risk):
            self._settle(approval, "approved", "policy", None, now)
        elif risk is not Risk.UNKNOWN and await self._rule_for(task, tool, arguments):
            self._settle(approval, "approved", "rule", None, now)
        else:
            approval.status = "pending"
            approval.expires_at = now + timeout_for(risk, self.settings)
        self.db.add(approval)
        await self.db.flush()
        if approval.status == "pending":
            self.events.after_commit(
                self.db,
                self.user_id,
                approval.session_id,
                EventType.APPROVAL_REQUIRED,
                {
                    "approval_id": str(approval.id),
                    "task_id": str(approval.task_id),
                    "call_id": call_id,
                    "tool": tool,
                    "arguments": approval.arguments,
                    "risk": approval.risk,
                    "reasons": approval.risk_reasons,
                    "expires_at": approval.expires_at.isoformat(),
                    "attempt": attempt,
                },
            )
        return approval

    async def request_plan(
        self, task: Task, *, arguments: dict[str, Any], reasons: list[str]
    ) -> Approval:
        """A pending approval of an orchestrated plan (`tool` = `plan`): its `plan` task
        waits until the user confirms or rejects it, or it expires. No policy or rule
        approves a plan by itself: it is asked for only when it is over the user's own
        thresholds."""
        if task.user_id != self.user_id:
            raise ValueError("the task belongs to another user")
        now = utcnow()
        approval = Approval(
            id=new_id(),
            user_id=self.user_id,
            project_id=task.project_id,
            session_id=task.session_id,
            task_id=task.id,
            agent_id=None,
            call_id="plan",
            tool="plan",
            arguments=dict(arguments),
            risk=Risk.HIGH.name,
            risk_reasons=list(reasons),
            attempt=1,
            status="pending",
            created_at=now,
            expires_at=now + timeout_for(Risk.HIGH, self.settings),
        )
        self.db.add(approval)
        await self.db.flush()
        return approval

    async def for_task(self, task_id: UUID) -> list[Approval]:
        """Every request of a task, oldest first."""
        return await self.queries.for_task(task_id)

    async def cancel_for_task(self, task_id: UUID, reason: str) -> int:
        """The task was cancelled: its pending requests are too. How many were."""
        now = utcnow()
        cancelled = 0
        for approval in await self.queries.pending(task_id=task_id):
            if await self._resolve(approval.id, "cancelled", "system", reason[:MAX_REASON], now):
                cancelled += 1
        return cancelled

    # -- the user's side -------------------------------------------------------------------

    async def get(self, approval_id: UUID) -> Approval:
        approval = await self.queries.approval(approval_id)
        if approval is None:
            raise ApprovalNotFound(f"You have no approval request {approval_id}")
        return approval

    async def confirm(self, approval_id: UUID, reason: str | None = None) -> Approval:
        return await self._decide(approval_id, "approved", reason)

    async def reject(self, approval_id: UUID, reason: str) -> Approval:
        if not reason.strip():
            raise ApprovalReasonRequired("A rejection needs a reason")
        return await self._decide(approval_id, "rejected", reason)

    async def batch(
        self,
        *,
        action: Literal["confirm", "reject"] | None,
        ids: Sequence[UUID] | None = None,
        tool: str | None = None,
        project_id: UUID | None = None,
        session_id: UUID | None = None,
        reason: str | None = None,
        rule: dict[str, Any] | None = None,
    ) -> BatchResult:
        """Resolve many pending requests at once: by id, or every one of a kind (a tool, a
        session, a project); and/or grant a standing rule, which also approves the pending
        requests it covers. Unknown ids refuse the whole batch (404); requests no longer
        pending are reported as skipped."""
        result = BatchResult()
        targets: list[Approval] = []
        if ids:
            unique = list(dict.fromkeys(ids))
            found = {row.id: row for row in await self.queries.approvals_by_id(unique)}
            missing = [str(approval_id) for approval_id in unique if approval_id not in found]
            if missing:
                raise ApprovalNotFound(f"You have no approval request {missing[0]}")
            targets = [found[approval_id] for approval_id in unique]
        elif action is not None:
            if tool is None and session_id is None and project_id is None:
                raise ValueError("a batch by kind needs a tool, session_id or project_id")
            if session_id is not None:
                await self._session(session_id)
            if project_id is not None:
                await self._project(project_id)
            targets = await self.queries.pending(
                tool=tool, project_id=project_id, session_id=session_id
            )
        if rule is not None:
            result.rule = await self.create_rule(**rule)
        now = utcnow()
        if action is not None:
            status = "approved" if action == "confirm" else "rejected"
            for approval in targets:
                await self._batch_one(approval, status, reason, now, result)
        if result.rule is not None:
            covered = await self._covered_by(result.rule)
            note = f"standing rule {result.rule.id}"
            for approval in covered:
                if all(done.id != approval.id for done in result.resolved):
                    await self._batch_one(approval, "approved", note, now, result)
        return result

    # -- rules -------------------------------------------------------------------------------

    async def create_rule(
        self,
        *,
        tool: str,
        path_pattern: str,
        scope: RuleScope,
        session_id: UUID | None = None,
        project_id: UUID | None = None,
    ) -> ApprovalRule:
        """A standing approval for `tool` on paths matching `path_pattern`, in one session
        or (remembered) in the whole project. The same rule twice is one rule."""
        if tool not in RULE_TOOLS:
            raise ApprovalRuleInvalid(f"Rules cover {', '.join(RULE_TOOLS)}; {tool!r} always asks")
        try:
            pattern = normalize_pattern(path_pattern)
        except ValueError as exc:
            raise ApprovalRuleInvalid(f"path_pattern {exc}") from exc
        if session_id is not None:
            chat_session = await self._session(session_id)
            if project_id is not None and project_id != chat_session.project_id:
                raise ApprovalRuleInvalid("The session is not in that project")
            project_id = chat_session.project_id
        elif scope == "session":
            raise ApprovalRuleInvalid("A session rule needs session_id")
        if project_id is None:
            raise ApprovalRuleInvalid("A project rule needs project_id or session_id")
        await self._project(project_id)
        rule_session = session_id if scope == "session" else None
        existing = await self.queries.same_rule(
            project_id=project_id, session_id=rule_session, tool=tool, path_pattern=pattern
        )
        if existing is not None:
            return existing
        if await self.queries.rule_count(project_id) >= MAX_RULES_PER_PROJECT:
            raise ApprovalRuleLimit(
                f"A project holds at most {MAX_RULES_PER_PROJECT} rules; delete some first"
            )
        rule = ApprovalRule(
            id=new_id(),
            user_id=self.user_id,
            project_id=project_id,
            session_id=rule_session,
            tool=tool,
            path_pattern=pattern,
            created_at=utcnow(),
        )
        self.db.add(rule)
        await self.db.flush()
        return rule

    async def delete_rule(self, rule_id: UUID) -> None:
        if not await self.queries.delete_rule(rule_id):
            raise ApprovalRuleNotFound(f"You have no approval rule {rule_id}")

    async def check_rule_filters(self, project_id: UUID | None, session_id: UUID | None) -> None:
        """A rules listing filtered by another user's project or session is a 404."""
        if project_id is not None:
            await self._project(project_id)
        if session_id is not None:
            await self._session(session_id)

    # -- policy and metrics ------------------------------------------------------------------

    async def policy(self) -> ApprovalPolicy:
        """The user's policy; the defaults (not stored) when they never set one."""
        stored: ApprovalPolicy | None = await self.queries.policy()
        if stored is not None:
            return stored
        return ApprovalPolicy(user_id=self.user_id, updated_at=utcnow(), **DEFAULT_POLICY)

    async def set_policy(
        self, *, mode: PolicyMode, threshold: Threshold, auto_approve_low: bool
    ) -> ApprovalPolicy:
        stored: ApprovalPolicy | None = await self.queries.policy()
        if stored is None:
            stored = ApprovalPolicy(user_id=self.user_id)
            self.db.add(stored)
        stored.mode = mode
        stored.threshold = threshold
        stored.auto_approve_low = auto_approve_low
        stored.updated_at = utcnow()
        await self.db.flush()
        return stored

    async def metrics(self) -> ApprovalMetrics:
        """Counts and rates over the user's whole history. Rates are over the requests
        that asked the user and are closed (approved, rejected or expired; cancelled ones
        are left out); response times over those a person answered."""
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        auto = 0
        total = 0
        for status, decided_by, count in await self.queries.outcome_counts():
            total += count
            if decided_by in AUTOMATIC:
                auto += count
            else:
                counts[status] = counts.get(status, 0) + count
        closed = counts["approved"] + counts["rejected"] + counts["expired"]
        durations = [
            (resolved - created).total_seconds()
            for created, resolved in await self.queries.response_times(RESPONSE_TIME_SAMPLE)
        ]
        return ApprovalMetrics(
            total=total,
            auto_approved=auto,
            requested=total - auto,
            pending=counts["pending"],
            approved=counts["approved"],
            rejected=counts["rejected"],
            expired=counts["expired"],
            cancelled=counts["cancelled"],
            approval_rate=_ratio(counts["approved"], closed),
            rejection_rate=_ratio(counts["rejected"], closed),
            timeout_rate=_ratio(counts["expired"], closed),
            response_time_avg_seconds=(
                round(statistics.fmean(durations), 3) if durations else None
            ),
            response_time_median_seconds=(
                round(statistics.median(durations), 3) if durations else None
            ),
        )

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _settle(
        approval: Approval, status: str, decided_by: str, reason: str | None, now: datetime
    ) -> None:
        approval.status = status
        approval.decided_by = decided_by
        approval.reason = reason
        approval.resolved_at = now

    async def _rule_for(self, task: Task, tool: str, arguments: dict[str, Any]) -> bool:
        if tool not in RULE_TOOLS:
            return False
        rules = await self.queries.rules_for_call(
            project_id=task.project_id, session_id=task.session_id, tool=tool
        )
        return any(rule_covers(rule, tool, arguments) for rule in rules)

    async def _covered_by(self, rule: ApprovalRule) -> list[Approval]:
        pending = await self.queries.pending(
            tool=rule.tool, project_id=rule.project_id, session_id=rule.session_id
        )
        return [
            approval
            for approval in pending
            if approval.risk != Risk.UNKNOWN.name
            and rule_covers(rule, approval.tool, approval.arguments)
        ]

    async def _resolve(
        self, approval_id: UUID, status: str, decided_by: str, reason: str | None, now: datetime
    ) -> Approval | None:
        resolved = await self.queries.resolve(
            approval_id, status=status, decided_by=decided_by, reason=reason, now=now
        )
        if resolved is not None:
            _announce_resolved(self.db, self.events, self.wake, resolved)
        return resolved

    async def _decide(self, approval_id: UUID, status: str, reason: str | None) -> Approval:
        approval = await self.get(approval_id)
        if approval.status != "pending":
            raise ApprovalNotPending(
                f"The request is already {approval.status}",
                extra={"approval_status": approval.status},
            )
        now = utcnow()
        if approval.expires_at <= now:
            # The sweep has not got to it yet; it is expired all the same. Keep that.
            await self._resolve(approval.id, "expired", "timeout", TIMED_OUT, now)
            raise ApprovalExpired(
                "The request timed out before your answer",
                extra={"approval_status": "expired"},
                commit=True,
            )
        resolved = await self._resolve(approval.id, status, "user", reason, now)
        if resolved is None:
            current = await self.queries.approval(approval.id, fresh=True)
            final = current.status if current is not None else "unknown"
            raise ApprovalNotPending(
                f"The request is already {final}", extra={"approval_status": final}
            )
        return resolved

    async def _batch_one(
        self,
        approval: Approval,
        status: str,
        reason: str | None,
        now: datetime,
        result: BatchResult,
    ) -> None:
        if approval.status == "pending" and approval.expires_at <= now:
            expired = await self._resolve(approval.id, "expired", "timeout", TIMED_OUT, now)
            result.skipped.append(Skipped(approval.id, "expired" if expired else "unknown"))
            return
        if approval.status != "pending":
            result.skipped.append(Skipped(approval.id, approval.status))
            return
        resolved = await self._resolve(approval.id, status, "batch", reason, now)
        if resolved is None:
            current = await self.queries.approval(approval.id, fresh=True)
            result.skipped.append(
                Skipped(approval.id, current.status if current is not None else "unknown")
            )
        else:
            result.resolved.append(resolved)

    async def _session(self, session_id: UUID) -> ChatSession:
        chat_session = await self.queries.get(ChatSession, session_id)
        if chat_session is None:
            raise SessionNotFound(f"You have no session {session_id}")
        return chat_session

    async def _project(self, project_id: UUID) -> Project:
        project = await self.queries.get(Project, project_id)
        if project is None:
            raise ProjectNotFound(f"You have no project {project_id}")
        return project

"""Approval requests, rules and policies; the system-wide expiry sweep."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents.models import (
    Approval,
    ApprovalRule,
)
from veche.apps.agents.repository.scoped import Scoped, rowcount

# -- approvals ----------------------------------------------------------------------------


class ApprovalQueries(Scoped):
    """One user's approval requests, standing rules and approval policy."""

    def approvals(
        self,
        *,
        status: str | None = None,
        session_id: UUID | None = None,
        task_id: UUID | None = None,
    ) -> Select[Approval]:
        statement = self.select(Approval)
        if status is not None:
            statement = statement.where(Approval.status == status)
        if session_id is not None:
            statement = statement.where(Approval.session_id == session_id)
        if task_id is not None:
            statement = statement.where(Approval.task_id == task_id)
        return statement

    async def approval(self, approval_id: UUID, *, fresh: bool = False) -> Approval | None:
        statement = self.approvals().where(Approval.id == approval_id)
        if fresh:  # after a conditional UPDATE: reload what the database holds
            statement = statement.execution_options(populate_existing=True)
        row: Approval | None = await self.session.scalar(statement)
        return row

    async def approvals_by_id(self, approval_ids: list[UUID]) -> list[Approval]:
        rows = await self.session.scalars(self.approvals().where(Approval.id.in_(approval_ids)))
        return list(rows.all())

    async def for_task(self, task_id: UUID) -> list[Approval]:
        rows = await self.session.scalars(
            self.approvals(task_id=task_id).order_by(Approval.created_at, Approval.id)
        )
        return list(rows.all())

    async def pending(
        self,
        *,
        tool: str | None = None,
        project_id: UUID | None = None,
        session_id: UUID | None = None,
        task_id: UUID | None = None,
        limit: int = 500,
    ) -> list[Approval]:
        """Pending requests, oldest first, narrowed by whichever of the filters are given."""
        statement = self.approvals(status="pending", session_id=session_id, task_id=task_id)
        if tool is not None:
            statement = statement.where(Approval.tool == tool)
        if project_id is not None:
            statement = statement.where(Approval.project_id == project_id)
        rows = await self.session.scalars(
            statement.order_by(Approval.created_at, Approval.id).limit(limit)
        )
        return list(rows.all())

    def resolve_statement(
        self,
        approval_id: UUID,
        *,
        status: str,
        decided_by: str,
        reason: str | None,
        now: dt.datetime,
    ) -> Any:
        return (
            update(Approval)
            .where(
                Approval.user_id == self.user_id,
                Approval.id == approval_id,
                Approval.status == "pending",
            )
            .values(status=status, decided_by=decided_by, reason=reason, resolved_at=now)
            .execution_options(synchronize_session=False)
        )

    async def resolve(
        self,
        approval_id: UUID,
        *,
        status: str,
        decided_by: str,
        reason: str | None,
        now: dt.datetime,
    ) -> Approval | None:
        """Resolve a request that is still pending; the updated row, or None if it no longer
        was (another request, process or the sweep got there first)."""
        outcome = await self.session.execute(
            self.resolve_statement(
                approval_id, status=status, decided_by=decided_by, reason=reason, now=now
            )
        )
        if rowcount(outcome) != 1:
            return None
        return await self.approval(approval_id, fresh=True)

    async def outcome_counts(self) -> list[tuple[str, str | None, int]]:
        """(status, decided_by, count) over all the user's requests."""
        rows = await self.session.execute(
            select(Approval.status, Approval.decided_by, func.count())
            .where(Approval.user_id == self.user_id)
            .group_by(Approval.status, Approval.decided_by)
        )
        return [(status, decided_by, int(count)) for status, decided_by, count in rows.all()]

    async def response_times(self, limit: int) -> list[tuple[dt.datetime, dt.datetime]]:
        """(created_at, resolved_at) of the newest `limit` requests a person answered."""
        rows = await self.session.execute(
            select(Approval.created_at, Approval.resolved_at)
            .where(
                Approval.user_id == self.user_id,
                Approval.decided_by.in_(("user", "batch")),
                Approval.resolved_at.is_not(None),
            )
            .order_by(Approval.created_at.desc())
            .limit(limit)
        )
        return [(created, resolved) for created, resolved in rows.all() if resolved is not None]

    def rules(
        self, *, project_id: UUID | None = None, session_id: UUID | None = None
    ) -> Select[ApprovalRule]:
        statement = self.select(ApprovalRule)
        if project_id is not None:
            statement = statement.where(ApprovalRule.project_id == project_id)
        if session_id is not None:
            statement = statement.where(ApprovalRule.session_id == session_id)
        return statement

    async def rules_for_call(
        self, *, project_id: UUID, session_id: UUID, tool: str
    ) -> list[ApprovalRule]:
        """The rules that may cover a call: the project's, and the session's own."""
        rows = await self.session.scalars(
            self.rules(project_id=project_id)
            .where(
                ApprovalRule.tool == tool,
                ApprovalRule.session_id.is_(None) | (ApprovalRule.session_id == session_id),
            )
            .order_by(ApprovalRule.created_at, ApprovalRule.id)
        )
        return list(rows.all())

    async def same_rule(
        self, *, project_id: UUID, session_id: UUID | None, tool: str, path_pattern: str
    ) -> ApprovalRule | None:
        statement = self.rules(project_id=project_id).where(
            ApprovalRule.tool == tool, ApprovalRule.path_pattern == path_pattern
        )
        statement = statement.where(
            ApprovalRule.session_id.is_(None)
            if session_id is None
            else ApprovalRule.session_id == session_id
        )
        row: ApprovalRule | None = await self.session.scalar(statement.limit(1))
        return row

    async def rule_count(self, project_id: UUID) -> int:
        return int(
            await self.session.scalar(
                select(func.count())
                .select_from(ApprovalRule)
                .where(ApprovalRule.user_id == self.user_id, ApprovalRule.project_id == project_id)
            )
            or 0
        )

    async def delete_rule(self, rule_id: UUID) -> bool:
        outcome = await self.session.execute(
            delete(ApprovalRule)
            .where(ApprovalRule.user_id == self.user_id, ApprovalRule.id == rule_id)
            .execution_options(synchronize_session=False)
        )
        return rowcount(outcome) == 1

    def policy_statement(self) -> Any:
        from veche.apps.agents.models import ApprovalPolicy

        return select(ApprovalPolicy).where(ApprovalPolicy.user_id == self.user_id)

    async def policy(self) -> Any:
        """The user's `ApprovalPolicy` row, or None when they never set one."""
        return await self.session.scalar(self.policy_statement())


class ApprovalSweepQueries:
    """The expiry sweep's queries, across all users. Each change is a conditional UPDATE,
    so sweeps running in several processes at once never warn or expire a request twice."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def due_warnings(
        self, now: dt.datetime, warn_before: dt.timedelta, limit: int
    ) -> list[Approval]:
        rows = await self.session.scalars(
            select(Approval)
            .where(
                Approval.status == "pending",
                Approval.warned_at.is_(None),
                Approval.expires_at > now,
                Approval.expires_at <= now + warn_before,
            )
            .order_by(Approval.expires_at)
            .limit(limit)
        )
        return list(rows.all())

    async def mark_warned(self, approval_id: UUID, now: dt.datetime) -> bool:
        outcome = await self.session.execute(
            update(Approval)
            .where(
                Approval.id == approval_id,
                Approval.status == "pending",
                Approval.warned_at.is_(None),
            )
            .values(warned_at=now)
            .execution_options(synchronize_session=False)
        )
        return rowcount(outcome) == 1

    async def overdue(self, now: dt.datetime, limit: int) -> list[Approval]:
        rows = await self.session.scalars(
            select(Approval)
            .where(Approval.status == "pending", Approval.expires_at <= now)
            .order_by(Approval.expires_at)
            .limit(limit)
        )
        return list(rows.all())

    async def expire(self, approval_id: UUID, reason: str, now: dt.datetime) -> bool:
        outcome = await self.session.execute(
            update(Approval)
            .where(Approval.id == approval_id, Approval.status == "pending")
            .values(status="expired", decided_by="timeout", reason=reason, resolved_at=now)
            .execution_options(synchronize_session=False)
        )
        return rowcount(outcome) == 1

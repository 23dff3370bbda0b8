"""Agent status, health and task metrics."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Select, Update, bindparam, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents.models import (
    Agent,
    Task,
)

# -- agent health and metrics -----------------------------------------------------------

# The task states in which an agent is working; paused tasks (waiting for an approval or a
# client's tool result) do not keep it busy.
WORKING_TASK_STATES = ("running",)
FINISHED_TASK_STATES = ("completed", "failed", "cancelled")
UNFINISHED_TASK_STATES = (
    "queued",
    "blocked",
    "running",
    "waiting_approval",
    "waiting_tool",
)


def _lock_agent_template() -> Select[str, str]:
    return (
        select(Agent.status, Agent.lifecycle)
        .where(Agent.user_id == bindparam("scope_user"), Agent.id == bindparam("agent"))
        .with_for_update(key_share=True)
    )


def _settle_template() -> Update:
    working = (
        select(Task.id)
        .where(
            Task.user_id == bindparam("scope_user"),
            Task.agent_id == bindparam("agent"),
            Task.status.in_(WORKING_TASK_STATES),
        )
        .exists()
    )
    wanted = case((working, "busy"), else_="ready")
    return (
        update(Agent)
        .where(
            Agent.user_id == bindparam("scope_user"),
            Agent.id == bindparam("agent"),
            Agent.status != wanted,
        )
        .values(
            status=wanted,
            status_reason=None,
            status_changed_at=bindparam("now"),
            updated_at=Agent.updated_at,
        )
        .execution_options(synchronize_session=False)
    )


# Built once with bound parameters: a task's end runs both, and building them (the settle
# with its subquery most) cost more of the event loop's time than running them.
_LOCK_AGENT = _lock_agent_template()
_SETTLE = _settle_template()


class HealthQueries:
    """One user's agent statuses and task figures. Every statement is built by a method
    here that filters by the user, so the scoping test can check each one."""

    def __init__(self, session: AsyncSession, user_id: UUID) -> None:
        self.session = session
        self.user_id = user_id

    def lock_statement(self, agent_id: UUID) -> tuple[Select[str, str], dict[str, Any]]:
        """The agent's status and lifecycle (all a transition reads of it), its row
        locked (see `lock_agent`); the statement and its parameters."""
        return _LOCK_AGENT, {"scope_user": self.user_id, "agent": agent_id}

    def status_statement(
        self,
        agent_id: UUID | Collection[UUID],
        status: str,
        reason: str | None,
        now: dt.datetime,
        *,
        unless_already: bool = False,
    ) -> Update:
        """Set the agent's (or agents') status; with `unless_already`, only if it has
        another one (so `status_changed_at` keeps the moment it first took this one)."""
        chosen = Agent.id == agent_id if isinstance(agent_id, UUID) else Agent.id.in_(agent_id)
        statement = update(Agent).where(Agent.user_id == self.user_id, chosen)
        if unless_already:
            statement = statement.where(Agent.status != status)
        # `updated_at` is kept: it says when the configuration last changed, not the status.
        return statement.values(
            status=status,
            status_reason=reason,
            status_changed_at=now,
            updated_at=Agent.updated_at,
        ).execution_options(synchronize_session=False)

    def settle_statement(self, agent_id: UUID, now: dt.datetime) -> tuple[Update, dict[str, Any]]:
        """`busy` while one of the agent's tasks runs, else `ready`, changed only if it is
        not that already; the statement and its parameters. The caller holds the agent's
        row (`lock_agent`), so the running tasks are counted after every earlier change to
        them committed."""
        return _SETTLE, {"scope_user": self.user_id, "agent": agent_id, "now": now}

    def counts_statement(self, agent_id: UUID) -> Select[str, int]:
        return (
            select(Task.status, func.count())
            .where(Task.user_id == self.user_id, Task.agent_id == agent_id)
            .group_by(Task.status)
        )

    def _timed(self, agent_id: UUID) -> tuple[ColumnElement[bool], ...]:
        return (
            Task.user_id == self.user_id,
            Task.agent_id == agent_id,
            Task.status.in_(FINISHED_TASK_STATES),
            Task.duration_ms.is_not(None),
        )

    def mean_statement(self, agent_id: UUID) -> Select[int, float | None]:
        return select(func.count(), func.avg(Task.duration_ms)).where(*self._timed(agent_id))

    def ranked_statement(self, agent_id: UUID, rank: int) -> Select[int | None]:
        """The `rank`-th shortest duration (1-based)."""
        return (
            select(Task.duration_ms)
            .where(*self._timed(agent_id))
            .order_by(Task.duration_ms)
            .offset(rank - 1)
            .limit(1)
        )

    async def lock_agent(self, agent_id: UUID) -> tuple[str, str] | None:
        """The agent's (status, lifecycle), its row locked until the transaction ends
        (PostgreSQL; SQLite has one writer anyway), so two tasks of one agent change its
        status one after the other; None if it is gone.

        `FOR NO KEY UPDATE`, not `FOR UPDATE`: the caller has usually just inserted a row
        that references the agent (an answer), which holds `FOR KEY SHARE` on it; two
        tasks ending together would each wait for the other's key share under `FOR
        UPDATE` (a deadlock), while `NO KEY UPDATE` does not conflict with it."""
        row = (await self.session.execute(*self.lock_statement(agent_id))).one_or_none()
        return None if row is None else (row[0], row[1])

    async def unfinished_tasks(self, agent_id: UUID) -> int:
        """The agent's tasks waiting on the bus or in flight."""
        return int(
            await self.session.scalar(
                select(func.count()).where(
                    Task.user_id == self.user_id,
                    Task.agent_id == agent_id,
                    Task.status.in_(UNFINISHED_TASK_STATES),
                )
            )
            or 0
        )

    async def set_lifecycle(self, agent_id: UUID, lifecycle: str) -> None:
        await self.session.execute(
            update(Agent)
            .where(Agent.user_id == self.user_id, Agent.id == agent_id)
            .values(lifecycle=lifecycle, updated_at=Agent.updated_at)
            .execution_options(synchronize_session=False)
        )

    async def settle(self, agent_id: UUID, now: dt.datetime) -> None:
        await self.session.execute(*self.settle_statement(agent_id, now))

    async def set_status(
        self,
        agent_id: UUID | Collection[UUID],
        status: str,
        reason: str | None,
        now: dt.datetime,
        *,
        unless_already: bool = False,
    ) -> None:
        await self.session.execute(
            self.status_statement(agent_id, status, reason, now, unless_already=unless_already)
        )

    async def task_counts(self, agent_id: UUID) -> dict[str, int]:
        """The agent's tasks by status."""
        rows = await self.session.execute(self.counts_statement(agent_id))
        return {status: int(count) for status, count in rows.all()}

    async def durations(self, agent_id: UUID) -> tuple[int, float | None, int | None]:
        """Over the agent's finished tasks with a duration: how many, the mean and the
        95th percentile (nearest rank) in milliseconds."""
        row = (await self.session.execute(self.mean_statement(agent_id))).one()
        count, mean = int(row[0] or 0), (float(row[1]) if row[1] is not None else None)
        if not count:
            return 0, None, None
        rank = -(-95 * count // 100)  # ceil(0.95 * count)
        p95 = await self.session.scalar(self.ranked_statement(agent_id, rank))
        return count, mean, p95


class SystemQueries:
    """For the agents' health job only: statuses across all users. Nothing a request
    serves may use this class."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def failed_agents(self, since_before: dt.datetime) -> list[Agent]:
        """Agents in `error` since before `since_before`."""
        rows = await self.session.scalars(
            select(Agent).where(
                Agent.status == "error",
                Agent.status_changed_at.is_(None) | (Agent.status_changed_at <= since_before),
            )
        )
        return list(rows.all())

    async def recover(
        self, agent_id: UUID, changed_at: dt.datetime | None, now: dt.datetime
    ) -> bool:
        """Put an agent back to `ready` if it is still in the error the job looked at."""
        outcome = await self.session.execute(
            update(Agent)
            .where(
                Agent.id == agent_id,
                Agent.status == "error",
                Agent.status_changed_at == changed_at,
            )
            .values(
                status="ready",
                status_reason=None,
                status_changed_at=now,
                updated_at=Agent.updated_at,
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(outcome, "rowcount", 0) or 0) == 1

    async def finish_draining(self) -> int:
        """`draining` agents with nothing left to do become `deregistered`."""
        unfinished = (
            select(Task.id)
            .where(Task.agent_id == Agent.id, Task.status.in_(UNFINISHED_TASK_STATES))
            .exists()
        )
        outcome = await self.session.execute(
            update(Agent)
            .where(Agent.lifecycle == "draining", ~unfinished)
            .values(lifecycle="deregistered", updated_at=Agent.updated_at)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(outcome, "rowcount", 0) or 0)

    async def release_idle_busy(self, now: dt.datetime) -> int:
        """`busy` agents with no working task (a crash left them so) back to `ready`."""
        working = (
            select(Task.id)
            .where(Task.agent_id == Agent.id, Task.status.in_(WORKING_TASK_STATES))
            .exists()
        )
        outcome = await self.session.execute(
            update(Agent)
            .where(Agent.status == "busy", ~working)
            .values(
                status="ready",
                status_reason=None,
                status_changed_at=now,
                updated_at=Agent.updated_at,
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(outcome, "rowcount", 0) or 0)

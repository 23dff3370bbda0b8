"""The approvals sweep, for every user at once: a warning to the stream before a pending
request's deadline (once each), and the overdue requests expired, their tasks woken to go
on without the call. Each runner runs it once per `runner_poll_seconds`
(docs/agents-approvals.md)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from veche.apps.agents.approvals import SWEEP_BATCH, TIMED_OUT, Wake, wake_after_commit
from veche.apps.agents.repository import ApprovalSweepQueries
from veche.apps.agents.stream import EventType, SessionEvents
from veche.kernel import utcnow
from veche.settings import AgentsSettings


async def sweep_approvals(
    db: AsyncSession,
    *,
    settings: AgentsSettings,
    events: SessionEvents,
    wake: Wake,
    now: datetime | None = None,
) -> tuple[int, int]:
    """Warn about requests close to their deadline (APPROVAL_EXPIRING, once each) and expire
    the overdue ones, for every user; (warned, expired). The caller commits `db`: events go
    out and expired requests' tasks are woken only after that commit. Safe to run in several
    processes at once."""
    now = now or utcnow()
    queries = ApprovalSweepQueries(db)
    warned = 0
    warn_before = timedelta(seconds=settings.approval_warning_seconds)
    for approval in await queries.due_warnings(now, warn_before, SWEEP_BATCH):
        if await queries.mark_warned(approval.id, now):
            warned += 1
            events.after_commit(
                db,
                approval.user_id,
                approval.session_id,
                EventType.APPROVAL_EXPIRING,
                {
                    "approval_id": str(approval.id),
                    "task_id": str(approval.task_id),
                    "expires_at": approval.expires_at.isoformat(),
                    "seconds_left": max(0, int((approval.expires_at - now).total_seconds())),
                },
            )
    expired = 0
    for approval in await queries.overdue(now, SWEEP_BATCH):
        if await queries.expire(approval.id, TIMED_OUT, now):
            expired += 1
            payload = {
                "approval_id": str(approval.id),
                "task_id": str(approval.task_id),
                "status": "expired",
                "decided_by": "timeout",
                "reason": TIMED_OUT,
            }
            events.after_commit(
                db, approval.user_id, approval.session_id, EventType.APPROVAL_RESOLVED, payload
            )
            wake_after_commit(db, wake, approval.task_id)
    return warned, expired

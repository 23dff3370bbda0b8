"""Usage accounting: every call is recorded with its tokens, latency, outcome and cost,
and per-user daily token budgets are enforced before a call is made.

The gateway hands each call's record to `record_soon`: the caller goes on with its answer
at once, and one writer task per ledger stores what has come in since its last write in
one transaction (a plan's parallel steps share one). Until its row is stored, a call's
tokens count in the budget from memory, so nothing spent is missed; `flush` waits for the
rows (the usage endpoints, shutdown, tests). A row still waiting when the process dies is
lost, as it would be if the process died before storing it itself."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from dataclasses import dataclass
from uuid import UUID

import structlog
from sqlalchemy import bindparam, func, select

from veche.kernel.ai import metrics
from veche.kernel.ai.errors import BudgetExceeded
from veche.kernel.ai.models import AIUsage
from veche.kernel.ai.types import TokenUsage
from veche.kernel.db import Database, new_id, utcnow
from veche.settings import AISettings

log = structlog.get_logger(__name__)

# The tokens a user's stored rows spent since a moment, leaving out the rows this ledger
# still holds (an empty list leaves out none). Built once: every model call reads it, and
# building it took longer than running it.
_SPENT = select(
    func.coalesce(func.sum(AIUsage.prompt_tokens + AIUsage.completion_tokens), 0)
).where(
    AIUsage.user_id == bindparam("user"),
    AIUsage.created_at >= bindparam("since"),
    AIUsage.id.not_in(bindparam("unstored", expanding=True)),
)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What one finished (or failed) call leaves behind."""

    app: str
    purpose: str
    kind: str
    provider: str
    model: str
    user_id: UUID | None
    usage: TokenUsage
    latency_seconds: float
    outcome: str = "ok"
    prompt: str | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    daily_tokens: int  # 0: unlimited
    used_today: int
    resets_at: dt.datetime

    @property
    def remaining(self) -> int | None:
        if not self.daily_tokens:
            return None
        return max(0, self.daily_tokens - self.used_today)


def day_start(now: dt.datetime) -> dt.datetime:
    return now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class UsageLedger:
    """Writes usage rows in their own transactions and answers budget questions."""

    def __init__(self, settings: AISettings, db: Database) -> None:
        self._settings = settings
        self._db = db
        # Rows waiting for the writer, and the batch it is storing: the budget counts
        # these from here and the other rows from the table.
        self._queued: list[AIUsage] = []
        self._writing: list[AIUsage] = []
        self._writer: asyncio.Task[None] | None = None

    def cost(self, model: str, usage: TokenUsage) -> float:
        price = self._settings.prices.get(model)
        if price is None:
            return 0.0
        return (
            usage.prompt_tokens * price.input_per_million
            + usage.completion_tokens * price.output_per_million
        ) / 1_000_000

    async def record(self, call: CallRecord) -> None:
        """Count the call in metrics and store it before returning. A storage failure is
        logged, not raised: the caller already has (or failed) its answer and must not
        lose it to bookkeeping."""
        self.record_soon(call)
        await self.flush()

    def record_soon(self, call: CallRecord) -> None:
        """Count the call in metrics now and queue its row for the writer task (module
        docstring). Needs a running event loop."""
        self._queued.append(self._row(call))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write(), name="ai-usage-writer"
            )

    async def flush(self) -> None:
        """Wait until every row queued so far is stored (or its failure logged)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        while self._queued:
            self._writing, self._queued = self._queued, []
            try:
                async with self._db.unit_of_work() as session:
                    session.add_all(self._writing)
            except Exception:
                log.exception("ai.usage.record_failed", rows=len(self._writing))
            finally:
                self._writing = []

    def _row(self, call: CallRecord) -> AIUsage:
        cost = self.cost(call.model, call.usage)
        metrics.CALLS.labels(call.app, call.purpose, call.model, call.outcome).inc()
        metrics.TOKENS.labels(call.app, call.model, "prompt").inc(call.usage.prompt_tokens)
        metrics.TOKENS.labels(call.app, call.model, "completion").inc(call.usage.completion_tokens)
        metrics.COST.labels(call.app, call.model).inc(cost)
        metrics.LATENCY.labels(call.provider, call.model).observe(call.latency_seconds)
        return AIUsage(
            id=new_id(),
            user_id=call.user_id,
            app=call.app,
            purpose=call.purpose,
            kind=call.kind,
            provider=call.provider,
            model=call.model[:200],
            prompt=call.prompt,
            prompt_tokens=call.usage.prompt_tokens,
            completion_tokens=call.usage.completion_tokens,
            latency_ms=math.ceil(call.latency_seconds * 1000),
            outcome=call.outcome,
            cost=cost,
            created_at=utcnow(),
        )

    async def budget(self, user_id: UUID, now: dt.datetime | None = None) -> Budget:
        now = now or utcnow()
        start = day_start(now)
        # The rows this ledger has not stored yet count from memory and are left out of
        # the sum, so one stored while the read runs counts once either way.
        unstored = [call for call in (*self._writing, *self._queued) if call.user_id == user_id]
        stored = await self._db.read_one(  # one read: no transaction of its own
            _SPENT, {"user": user_id, "since": start, "unstored": [row.id for row in unstored]}
        )
        used = int((stored[0] if stored is not None else 0) or 0) + sum(
            call.prompt_tokens + call.completion_tokens for call in unstored
        )
        return Budget(
            daily_tokens=self._settings.daily_token_budget,
            used_today=used,
            resets_at=start + dt.timedelta(days=1),
        )

    async def ensure_budget(self, user_id: UUID | None, app: str) -> None:
        """Refuse with 429 when the user has spent today's tokens; system calls are free."""
        if user_id is None or not self._settings.daily_token_budget:
            return
        now = utcnow()
        budget = await self.budget(user_id, now)
        if budget.remaining == 0:
            metrics.REFUSED.labels(app).inc()
            retry_after = max(1, math.ceil((budget.resets_at - now).total_seconds()))
            raise BudgetExceeded(
                f"Today's budget of {budget.daily_tokens} tokens is used up; "
                f"it resets at {budget.resets_at.isoformat()}",
                headers={"Retry-After": str(retry_after)},
                extra={
                    "daily_tokens": budget.daily_tokens,
                    "used_today": budget.used_today,
                    "resets_at": budget.resets_at.isoformat(),
                },
            )

"""Usage accounting: every call is recorded with its tokens, latency, outcome and cost,
and per-user daily token budgets are enforced before a call is made.

The gateway hands each call's record to `record_soon`: the caller goes on with its answer
at once, and one writer task per ledger stores what has come in since its last write in
one transaction (a plan's parallel steps share one). Until its row is stored, a call's
tokens count in the budget from memory, so nothing spent is missed; `flush` waits for the
rows (the usage endpoints, shutdown, tests). A row still waiting when the process dies is
lost, as it would be if the process died before storing it itself.

A budget check reads the day's totals from `ai_usage_days`, not the day's calls: each
write adds its rows' tokens to its ledger's row for the user and day (`AIUsageDay`) and
numbers itself there (`batch`), in the same transaction as the rows. The check reads every
ledger's total for the user and day, and counts from memory this ledger's calls in writes
numbered after the one its read saw, so a call counts once whether its write commits
before, during or after the read. Other processes' calls count once they are stored."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import math
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import Executable, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from veche.kernel.ai import metrics
from veche.kernel.ai.errors import BudgetExceeded
from veche.kernel.ai.models import AIUsage, AIUsageDay
from veche.kernel.ai.types import TokenUsage
from veche.kernel.db import Database, new_id, utcnow
from veche.settings import AISettings

log = structlog.get_logger(__name__)

# Every ledger's stored tokens for a user and day, with the last write each includes.
_DAY_TOTALS = select(AIUsageDay.ledger_id, AIUsageDay.tokens, AIUsageDay.batch).where(
    AIUsageDay.user_id == bindparam("user"), AIUsageDay.day == bindparam("day")
)
_INSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


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
        # This ledger's rows in `ai_usage_days`.
        self._id = new_id()
        # Rows waiting for the writer; the write in progress and its number; the last
        # write committed.
        self._queued: list[AIUsage] = []
        self._writing: list[AIUsage] = []
        self._batch = 0
        self._committed = 0
        # The budget reads in flight, by the last write committed when each began (it
        # sees that one and those before); and the writes committed since the earliest
        # of those marks, which a read in flight may not have seen, by number.
        self._reads: collections.Counter[int] = collections.Counter()
        self._stored: dict[int, list[AIUsage]] = {}
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
            self._batch += 1
            batch, self._writing, self._queued = self._batch, self._queued, []
            try:
                async with self._db.unit_of_work() as session:
                    session.add_all(self._writing)
                    totals = self._day_totals(batch, self._writing)
                    if totals is not None:
                        await session.execute(totals)
                self._committed = batch
                if self._reads:  # a read in flight may have missed this write
                    self._stored[batch] = self._writing
            except Exception:
                log.exception("ai.usage.record_failed", rows=len(self._writing))
            finally:
                self._writing = []

    def _day_totals(self, batch: int, rows: list[AIUsage]) -> Executable | None:
        """The statement adding `rows`' tokens to this ledger's totals per user and day,
        numbered `batch`; None if no row has a user."""
        tokens: dict[tuple[UUID, dt.date], int] = {}
        for row in rows:
            if row.user_id is not None:
                key = (row.user_id, row.created_at.astimezone(dt.UTC).date())
                tokens[key] = tokens.get(key, 0) + row.prompt_tokens + row.completion_tokens
        if not tokens:
            return None
        statement = _INSERTS[self._db.dialect](AIUsageDay).values(
            [
                {"user_id": user, "day": day, "ledger_id": self._id, "tokens": n, "batch": batch}
                for (user, day), n in tokens.items()
            ]
        )
        done: Executable = statement.on_conflict_do_update(
            index_elements=["user_id", "day", "ledger_id"],
            set_={
                "tokens": AIUsageDay.tokens + statement.excluded.tokens,
                "batch": statement.excluded.batch,
            },
        )
        return done

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
        mark = self._committed
        self._reads[mark] += 1
        try:  # one read: no transaction of its own
            totals = await self._db.read_all(_DAY_TOTALS, {"user": user_id, "day": start.date()})
        finally:
            self._reads[mark] -= 1
            if not self._reads[mark]:
                del self._reads[mark]
        stored, seen = 0, 0
        for ledger_id, tokens, batch in totals:
            stored += int(tokens)
            if ledger_id == self._id:
                seen = int(batch)
        # This ledger's calls in writes after the one the read saw (the user's latest
        # then), from memory: stored since, being stored, or waiting.
        unseen = [rows for batch, rows in self._stored.items() if batch > seen]
        if self._writing and self._batch > seen:
            unseen.append(self._writing)
        unseen.append(self._queued)
        # What every read still in flight has seen need not be kept for it.
        floor = min(self._reads, default=self._committed)
        for batch in [batch for batch in self._stored if batch <= floor]:
            del self._stored[batch]
        end = start + dt.timedelta(days=1)
        used = stored + sum(
            row.prompt_tokens + row.completion_tokens
            for rows in unseen
            for row in rows
            if row.user_id == user_id and start <= row.created_at < end
        )
        return Budget(
            daily_tokens=self._settings.daily_token_budget, used_today=used, resets_at=end
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

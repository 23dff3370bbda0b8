"""Usage accounting: every call is recorded with its tokens, latency, outcome and cost,
and per-user daily token budgets are enforced before a call is made."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from uuid import UUID

import structlog
from sqlalchemy import func, select

from veche.kernel.ai import metrics
from veche.kernel.ai.errors import BudgetExceeded
from veche.kernel.ai.models import AIUsage
from veche.kernel.ai.types import TokenUsage
from veche.kernel.db import Database, utcnow
from veche.settings import AISettings

log = structlog.get_logger(__name__)


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

    def cost(self, model: str, usage: TokenUsage) -> float:
        price = self._settings.prices.get(model)
        if price is None:
            return 0.0
        return (
            usage.prompt_tokens * price.input_per_million
            + usage.completion_tokens * price.output_per_million
        ) / 1_000_000

    async def record(self, call: CallRecord) -> None:
        """Count the call in metrics and store it. A storage failure is logged, not raised:
        the caller already has (or failed) its answer and must not lose it to bookkeeping."""
        cost = self.cost(call.model, call.usage)
        metrics.CALLS.labels(call.app, call.purpose, call.model, call.outcome).inc()
        metrics.TOKENS.labels(call.app, call.model, "prompt").inc(call.usage.prompt_tokens)
        metrics.TOKENS.labels(call.app, call.model, "completion").inc(call.usage.completion_tokens)
        metrics.COST.labels(call.app, call.model).inc(cost)
        metrics.LATENCY.labels(call.provider, call.model).observe(call.latency_seconds)
        row = AIUsage(
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
        )
        try:
            async with self._db.unit_of_work() as session:
                session.add(row)
        except Exception:
            log.exception("ai.usage.record_failed", app=call.app, purpose=call.purpose)

    async def budget(self, user_id: UUID, now: dt.datetime | None = None) -> Budget:
        now = now or utcnow()
        start = day_start(now)
        statement = select(
            func.coalesce(func.sum(AIUsage.prompt_tokens + AIUsage.completion_tokens), 0)
        ).where(AIUsage.user_id == user_id, AIUsage.created_at >= start)
        row = await self._db.read_one(statement)  # one read: no transaction of its own
        used = int((row[0] if row is not None else 0) or 0)
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

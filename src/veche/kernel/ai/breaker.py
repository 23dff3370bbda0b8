"""A circuit breaker for one provider: stop calling a backend that keeps failing.

Closed, it lets every call through and counts consecutive provider-side failures; at the
threshold it opens and every call fails fast with `CircuitOpen` (no request is sent) until
the reset timeout passes. Then it is half-open: exactly one trial call goes through, and
its outcome closes the circuit again or re-opens it for another reset period. Only
failures of the provider count (timeouts, connection errors, 429/5xx after retries); a
request the provider refused proved that it answers, and counts as a success.

The methods never await, so on one event loop they need no lock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Literal

from veche.kernel.ai.errors import ProviderUnavailable

CircuitState = Literal["closed", "open", "half_open"]


class CircuitOpen(ProviderUnavailable):
    """The breaker refused the call without sending it; `Retry-After` says when to retry."""

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            "The AI provider failed repeatedly; calls are paused for a moment",
            headers={"Retry-After": str(seconds)},
        )
        self.retry_after = retry_after


class CircuitBreaker:
    """Counts consecutive failures and fails fast while the backend looks down."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_seconds <= 0:
            raise ValueError("reset_seconds must be positive")
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_seconds:
            return "half_open"
        return "open"

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_after(self) -> float:
        """Seconds until the breaker lets a trial call through (0 when it would now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.reset_seconds - self._clock())

    def before_call(self) -> None:
        """Admit a call or raise `CircuitOpen`; every admitted call must report its outcome."""
        state = self.state
        if state == "closed":
            return
        if state == "half_open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return
        # Open, or half-open with the one trial still running.
        raise CircuitOpen(self.retry_after())

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._trial_in_flight or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._trial_in_flight = False

    def record_abandoned(self) -> None:
        """The call ended without a verdict (cancelled): free the trial slot, change nothing."""
        self._trial_in_flight = False

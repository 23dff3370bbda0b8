"""The circuit breaker's states, driven by a hand-moved clock."""

from __future__ import annotations

import pytest

from veche.kernel.ai.breaker import CircuitBreaker, CircuitOpen
from veche.kernel.ai.errors import ProviderUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, reset_seconds=10.0, clock=clock)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.before_call()
        breaker.record_failure()


def test_opens_after_consecutive_failures(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    assert breaker.state == "closed"
    fail(breaker, 1)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as caught:
        breaker.before_call()
    assert isinstance(caught.value, ProviderUnavailable)
    assert caught.value.headers == {"Retry-After": "10"}


def test_a_success_resets_the_count(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    breaker.before_call()
    breaker.record_success()
    fail(breaker, 2)
    assert breaker.state == "closed"
    assert breaker.consecutive_failures == 2


def test_retry_after_counts_down(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 3)
    clock.now += 6.5
    assert breaker.retry_after() == pytest.approx(3.5)
    with pytest.raises(CircuitOpen) as caught:
        breaker.before_call()
    assert caught.value.headers["Retry-After"] == "4"


def test_half_open_admits_one_trial_and_closes_on_success(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    fail(breaker, 3)
    clock.now += 10
    assert breaker.state == "half_open"
    breaker.before_call()
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # the trial is still running
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.before_call()


def test_a_failed_trial_reopens_for_another_period(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 3)
    clock.now += 10
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 9.9
    assert breaker.state == "open"
    clock.now += 0.1
    assert breaker.state == "half_open"


def test_an_abandoned_trial_frees_the_slot(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 3)
    clock.now += 10
    breaker.before_call()
    breaker.record_abandoned()
    assert breaker.state == "half_open"
    breaker.before_call()
    breaker.record_success()
    assert breaker.state == "closed"


def test_refuses_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="reset_seconds"):
        CircuitBreaker(reset_seconds=0)

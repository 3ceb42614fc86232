"""Circuit breaker state machine, driven by a fake clock."""

from __future__ import annotations

from portway.config.schema import CircuitBreakerConfig
from portway.upstream.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def breaker(clock: Clock, **kw: object) -> CircuitBreaker:
    cfg = CircuitBreakerConfig.model_validate(
        {
            "failure_ratio": 0.5,
            "min_requests": 10,
            "window": "10s",
            "open_for": "5s",
            "half_open_probes": 2,
            **kw,
        }
    )
    return CircuitBreaker(cfg, clock)


def test_stays_closed_below_min_requests() -> None:
    c = Clock()
    b = breaker(c)
    for _ in range(9):
        assert b.allow()
        b.record(False)
    assert b.state == CLOSED
    assert b.available()


def test_opens_on_failure_ratio_and_rejects() -> None:
    c = Clock()
    b = breaker(c)
    for i in range(10):
        b.record(i % 2 == 0)  # 5 ok, 5 failed: ratio 0.5 reached at the 10th
    assert b.state == OPEN
    assert not b.allow()
    assert not b.available()
    assert b.retry_in() == 5.0


def test_below_ratio_stays_closed() -> None:
    c = Clock()
    b = breaker(c)
    for i in range(30):
        b.record(i % 3 != 0)  # a third failed
    assert b.state == CLOSED


def test_window_forgets_old_failures() -> None:
    c = Clock()
    b = breaker(c)
    for _ in range(9):
        b.record(False)
    c.t += 11  # the whole window has passed
    b.record(False)
    assert b.state == CLOSED
    assert b.counts() == (0, 1)


def test_rolling_window_partial_expiry() -> None:
    c = Clock()
    b = breaker(c)
    for _ in range(6):
        b.record(False)
    c.t += 6
    for _ in range(6):
        b.record(True)
    assert b.counts() == (6, 6)
    c.t += 5  # the first six are now older than the window
    assert b.counts() == (6, 0)


def open_breaker(c: Clock) -> CircuitBreaker:
    b = breaker(c)
    for _ in range(10):
        b.record(False)
    assert b.state == OPEN
    return b


def test_half_open_after_open_for_lets_n_probes() -> None:
    c = Clock()
    b = open_breaker(c)
    c.t += 4.9
    assert not b.allow()
    c.t += 0.2
    assert b.available()
    assert b.allow()
    assert b.state == HALF_OPEN
    assert b.allow()
    assert not b.allow()  # only 2 probes
    assert not b.available()


def test_half_open_closes_after_successful_probes() -> None:
    c = Clock()
    b = open_breaker(c)
    c.t += 5
    assert b.allow() and b.allow()
    b.record(True)
    assert b.state == HALF_OPEN
    b.record(True)
    assert b.state == CLOSED
    assert b.counts() == (0, 0)
    assert b.allow()


def test_half_open_failure_reopens() -> None:
    c = Clock()
    b = open_breaker(c)
    c.t += 5
    assert b.allow()
    b.record(False)
    assert b.state == OPEN
    assert not b.allow()
    c.t += 5
    assert b.allow()


def test_released_probe_slot_is_reusable() -> None:
    c = Clock()
    b = open_breaker(c)
    c.t += 5
    assert b.allow() and b.allow()
    assert not b.allow()
    b.release()
    assert b.allow()


def test_lost_probes_are_reclaimed_after_open_for() -> None:
    c = Clock()
    b = open_breaker(c)
    c.t += 5
    assert b.allow() and b.allow()
    c.t += 4
    assert not b.allow()
    c.t += 1.5
    assert b.available()
    assert b.allow()


def test_outcomes_while_open_are_ignored() -> None:
    c = Clock()
    b = open_breaker(c)
    b.record(True)
    b.record(True)
    assert b.state == OPEN


def test_clock_going_backwards_resets_window() -> None:
    c = Clock()
    b = breaker(c)
    for _ in range(5):
        b.record(False)
    c.t -= 100
    b.record(False)
    assert b.counts() == (0, 1)
    assert b.state == CLOSED

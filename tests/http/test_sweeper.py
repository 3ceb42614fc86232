"""The timeout sweeper's deadline buckets (``http/sweeper.py``): a tick visits what came due,
not every watched object. Deterministic: ticks are driven with chosen loop times and the
sweeper counts the objects it visits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from portway.http.sweeper import INTERVAL, NEVER, UNWATCHED, Sweeper


class Obj:
    def __init__(self, deadline: float = NEVER) -> None:
        self.deadline = deadline
        self.due = UNWATCHED
        self.fired: list[float] = []

    def expired(self, now: float) -> None:
        self.fired.append(now)
        self.deadline = NEVER


@pytest.fixture
def sweeper() -> Iterator[Sweeper]:
    loop = asyncio.new_event_loop()
    try:
        yield Sweeper(loop)
    finally:
        loop.close()


def _set(s: Sweeper, o: Obj, deadline: float) -> None:
    """What the connections' ``_set_deadline`` does."""
    o.deadline = deadline
    if deadline < o.due:
        s.refile(o)


def test_ten_thousand_idle_connections_are_not_visited_every_tick(sweeper: Sweeper) -> None:
    idle = [Obj(60.0) for _ in range(10_000)]
    for o in idle:
        sweeper.watch(o)
    assert len(sweeper) == 10_000 and sweeper.filed() == 10_000
    # 59 s of ticks (1180 of them): nothing is due, nothing is visited
    t = 0.0
    while t < 59.0:
        t += INTERVAL
        sweeper.tick(t)
    assert sweeper.visited == 0
    # the old sweep looked at every object on every tick: 11.8 million visits by now
    sweeper.tick(60.0 + INTERVAL)
    assert sweeper.visited == 10_000
    assert all(o.fired == [60.0 + INTERVAL] for o in idle)
    assert sweeper.filed() == 0 and len(sweeper) == 10_000


def test_a_deadline_moved_later_is_refiled_when_its_bucket_comes(sweeper: Sweeper) -> None:
    o = Obj(1.0)
    sweeper.watch(o)
    # keep-alive requests move the idle deadline later without telling the sweeper
    for k in range(1, 9):
        _set(sweeper, o, 1.0 + k * 0.25)
    sweeper.tick(1.0 + INTERVAL)
    assert o.fired == [] and sweeper.visited == 1  # looked at once, filed again at 3.0
    sweeper.tick(2.0)
    assert sweeper.visited == 1
    # (a timeout fires up to one interval late)
    sweeper.tick(3.0 + INTERVAL)
    assert o.fired == [3.0 + INTERVAL] and sweeper.visited == 2


def test_a_deadline_moved_earlier_fires_on_time(sweeper: Sweeper) -> None:
    o = Obj(60.0)
    sweeper.watch(o)
    _set(sweeper, o, 0.5)  # a header timeout shorter than the idle one
    sweeper.tick(0.4)
    assert o.fired == []
    sweeper.tick(0.5 + INTERVAL)
    assert o.fired == [0.5 + INTERVAL] and sweeper.visited == 1
    # NEVER -> finite (an upstream connection's exchange arms its read timeout)
    p = Obj()
    sweeper.watch(p)
    assert sweeper.filed() == 0
    _set(sweeper, p, 2.0)
    assert sweeper.filed() == 1
    sweeper.tick(2.0 + INTERVAL)
    assert p.fired == [2.0 + INTERVAL]


def test_unwatched_during_a_tick_and_a_failing_object(sweeper: Sweeper) -> None:
    class Closer(Obj):
        def expired(self, now: float) -> None:
            super().expired(now)
            sweeper.unwatch(other)

    class Broken(Obj):
        def expired(self, now: float) -> None:
            raise RuntimeError("a bug")

    a, other, bad, good = Closer(1.0), Obj(1.0), Broken(1.0), Obj(1.0)
    for o in (a, other, bad, good):
        sweeper.watch(o)
    sweeper.tick(1.0 + INTERVAL)
    assert a.fired == [1.0 + INTERVAL] and good.fired == [1.0 + INTERVAL]
    # the unwatched one is not expired after being unwatched, nor kept
    assert other.due == UNWATCHED
    assert bad.due == UNWATCHED
    assert len(sweeper) == 2
    sweeper.unwatch(a)
    sweeper.unwatch(a)  # twice is harmless
    assert len(sweeper) == 1


def test_a_long_stall_expires_everything_due_once(sweeper: Sweeper) -> None:
    objs = [Obj(0.1 * k) for k in range(1, 101)]
    for o in objs:
        sweeper.watch(o)
    sweeper.tick(1000.0)
    assert all(o.fired == [1000.0] for o in objs)
    assert sweeper.visited == 100

"""Property tests of the limiting algorithms against exact reference models (fake clock)."""

from __future__ import annotations

from fractions import Fraction as F

from hypothesis import given, settings
from hypothesis import strategies as st

from portway.plugins._ratelimit.algorithms import (
    ALGORITHMS,
    State,
    fixed_window,
    gcra,
    sliding_window,
    token_bucket,
)

# time in integer milliseconds, so the exact reference never sees a float
rates = st.integers(1, 50)
pers = st.sampled_from([100, 1000, 2000, 5000, 60_000])
bursts = st.integers(1, 50)
costs = st.integers(0, 4)
events = st.lists(st.tuples(st.integers(0, 400), costs), min_size=1, max_size=60)


def run(step, rate: int, per: int, burst: int, evs: list[tuple[int, int]]):
    """Feed (gap, cost) events; return (time, cost, allowed, retry_after) per event."""
    state: State | None = None
    now = 0
    out = []
    for gap, cost in evs:
        now += gap
        ok, new, _rem, _reset, retry, _exp = step(state, rate, per, burst, float(now), cost)
        if ok:
            state = new
        out.append((now, cost, ok, retry))
    return out


def ref_bucket(rate: int, per: int, burst: int, evs: list[tuple[int, int]]) -> list[bool]:
    tokens, last, now, out = F(burst), 0, 0, []
    for gap, cost in evs:
        now += gap
        tokens = min(F(burst), tokens + F(now - last) * rate / per)
        last = now
        ok = tokens >= cost
        if ok:
            tokens -= cost
        out.append(ok)
    return out


def ref_fixed(rate: int, per: int, evs: list[tuple[int, int]]) -> list[bool]:
    counts: dict[int, int] = {}
    now, out = 0, []
    for gap, cost in evs:
        now += gap
        w = now // per
        ok = counts.get(w, 0) + cost <= rate
        if ok:
            counts[w] = counts.get(w, 0) + cost
        out.append(ok)
    return out


def ref_sliding(rate: int, per: int, evs: list[tuple[int, int]]) -> list[bool]:
    counts: dict[int, int] = {}
    now, out = 0, []
    for gap, cost in evs:
        now += gap
        w = now // per
        weight = 1 - F(now - w * per, per)
        est = counts.get(w - 1, 0) * weight + counts.get(w, 0)
        ok = est + cost <= rate
        if ok:
            counts[w] = counts.get(w, 0) + cost
        out.append(ok)
    return out


@settings(max_examples=300, deadline=None)
@given(rates, pers, bursts, events)
def test_gcra_and_token_bucket_match_exact_bucket(rate, per, burst, evs):
    expected = ref_bucket(rate, per, burst, evs)
    assert [r[2] for r in run(gcra, rate, per, burst, evs)] == expected
    assert [r[2] for r in run(token_bucket, rate, per, burst, evs)] == expected


@settings(max_examples=300, deadline=None)
@given(rates, pers, bursts, events)
def test_gcra_never_exceeds_burst_plus_rate(rate, per, burst, evs):
    admitted = [(t, c) for t, c, ok, _ in run(gcra, rate, per, burst, evs) if ok]
    for i, (t0, _) in enumerate(admitted):
        total = 0
        for t1, c in admitted[i:]:
            total += c
            assert total <= burst + F(rate * (t1 - t0), per)


@settings(max_examples=300, deadline=None)
@given(rates, pers, events)
def test_fixed_window_matches_reference(rate, per, evs):
    res = run(fixed_window, rate, per, 0, evs)
    assert [r[2] for r in res] == ref_fixed(rate, per, evs)
    per_window: dict[int, int] = {}
    for t, c, ok, _ in res:
        if ok:
            per_window[t // per] = per_window.get(t // per, 0) + c
    assert all(v <= rate for v in per_window.values())


@settings(max_examples=300, deadline=None)
@given(rates, pers, events)
def test_sliding_window_matches_reference(rate, per, evs):
    res = run(sliding_window, rate, per, 0, evs)
    assert [r[2] for r in res] == ref_sliding(rate, per, evs)
    per_window: dict[int, int] = {}
    for t, c, ok, _ in res:
        if ok:
            per_window[t // per] = per_window.get(t // per, 0) + c
    assert all(v <= rate for v in per_window.values())


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(ALGORITHMS)), rates, pers, bursts, events, st.integers(1, 4))
def test_retry_after_is_exact(name, rate, per, burst, evs, cost):
    """A rejected request is admitted at now + retry_after, and not noticeably before."""
    step = ALGORITHMS[name]
    state: State | None = None
    now = 0.0
    for gap, c in evs:
        now += gap
        ok, new, *_ = step(state, rate, per, burst, now, c)
        if ok:
            state = new
    ok, _, _, _, retry, _ = step(state, rate, per, burst, now, cost)
    capacity = burst if name in ("gcra", "token_bucket") else rate
    if ok:
        assert retry == 0
        return
    if cost > capacity:
        assert retry == float("inf")
        return
    assert retry > 0
    assert step(state, rate, per, burst, now + retry + 1e-6, cost)[0]
    if retry > 1e-3:
        assert not step(state, rate, per, burst, now + retry - 1e-3, cost)[0]


@given(rates, pers, bursts)
def test_gcra_burst_then_one_per_interval(rate, per, burst):
    state: State | None = None
    for _ in range(burst):
        ok, state, *_ = gcra(state, rate, per, burst, 0.0, 1)
        assert ok
    ok, _, rem, _, retry, _ = gcra(state, rate, per, burst, 0.0, 1)
    assert not ok and rem == 0
    assert abs(retry - per / rate) < 1e-6
    ok, _, rem, *_ = gcra(state, rate, per, burst, per / rate, 1)
    assert ok and rem == 0


@given(rates, pers, bursts)
def test_remaining_counts_down_from_burst(rate, per, burst):
    state: State | None = None
    for i in range(burst):
        ok, state, rem, reset, _, expires = token_bucket(state, rate, per, burst, 0.0, 1)
        assert ok and rem == burst - i - 1
        assert abs(reset - (i + 1) * per / rate) < 1e-6
        assert expires == reset


def test_window_algorithms_reset_and_expiry():
    ok, _st1, rem, reset, _, exp = fixed_window(None, 3, 1000, 0, 250.0, 1)
    assert ok and rem == 2 and reset == 750 and exp == 1000
    ok, _st2, rem, reset, _, exp = sliding_window(None, 3, 1000, 0, 250.0, 1)
    assert ok and rem == 2 and reset == 1750 and exp == 2000
    # next window: the previous count weighs 75% at 250ms in
    ok, _, rem, *_ = sliding_window([0.0, 3.0, 0.0], 3, 1000, 0, 1250.0, 1)
    assert not ok and rem == 0
    ok, _, rem, *_ = sliding_window([0.0, 3.0, 0.0], 3, 1000, 0, 1700.0, 1)
    assert ok and rem == 1

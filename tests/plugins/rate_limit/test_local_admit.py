"""``LocalLimiter.admit`` (the hooks' call: no decision object for a stored key of a
one-GCRA-limit limiter) decides exactly as ``decide``, and the report it leaves renders the
same fields."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from portway.http.headers import Headers
from portway.http.models import Request
from portway.pipeline.context import RequestContext
from portway.plugins._ratelimit.headers import (
    Reporter,
    add_admitted,
    add_report,
    header_pairs,
    render_fields,
    reports_of,
)
from portway.plugins._ratelimit.local import LimitSpec, LocalLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ctx() -> RequestContext:
    return RequestContext(Request("GET", "/", b"", Headers()))


@settings(max_examples=60, deadline=None)
@given(
    algorithm=st.sampled_from(["gcra", "token_bucket", "fixed_window", "sliding_window"]),
    rate=st.integers(1, 20),
    burst=st.integers(1, 20),
    steps=st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3), st.floats(0.0, 0.7)),
        max_size=60,
    ),
)
def test_admit_decides_as_decide(
    algorithm: str, rate: int, burst: int, steps: list[tuple[str, int, float]]
) -> None:
    spec = LimitSpec("p", float(rate), 1.0, float(burst))
    c1, c2 = Clock(), Clock()
    ref = LocalLimiter(algorithm, [spec], clock=c1)
    fast = LocalLimiter(algorithm, [spec], clock=c2)
    rep1 = Reporter(["p"], [rate], [1], "both")
    rep2 = Reporter(["p"], [rate], [1], "both")
    for key, cost, dt in steps:
        c1.now += dt
        c2.now += dt
        d = ref.decide(key, cost)
        got = fast.admit(key, cost)
        x1, x2 = ctx(), ctx()
        add_report(x1, rep1, d)
        if got is None:
            assert algorithm == "gcra" and d.allowed
            assert (fast.last_remaining, fast.last_reset) == (d.remaining[0], d.reset[0])
            add_admitted(x2, rep2, fast.last_remaining, fast.last_reset)
        else:
            assert (got.allowed, got.remaining, got.reset, got.retry_after) == (
                d.allowed,
                d.remaining,
                d.reset,
                d.retry_after,
            )
            add_report(x2, rep2, got)
        r1, r2 = reports_of(x1), reports_of(x2)
        assert r1 is not None and r2 is not None
        out1: list[tuple[bytes, bytes]] = []
        out2: list[tuple[bytes, bytes]] = []
        render_fields(r1, out1)
        render_fields(r2, out2)
        assert out1 == out2
        assert header_pairs(r1) == header_pairs(r2)
    assert {k: e.states for k, e in ref._entries.items()} == {
        k: e.states for k, e in fast._entries.items()
    }

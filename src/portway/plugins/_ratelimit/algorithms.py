"""The four limiting algorithms as pure functions over an explicit state and clock.

Each ``step(state, rate, per, burst, now, cost)`` decides one request of weight ``cost``
against one limit of ``rate`` units per ``per`` time units (any unit, as long as ``now`` uses
the same one) and returns a :data:`Step`:

``(allowed, new_state, remaining, reset, retry_after, expires)``

* ``new_state`` is the state to store when *every* limit of the request allows it (the caller
  commits all or none, so a rejected request consumes nothing anywhere); it is ``None`` on
  rejection.
* ``remaining`` is how many units could still be admitted right now (after this request if
  allowed); ``reset`` is the time until the limit is back at full capacity; ``retry_after`` is
  the time until this request would be admitted (``inf`` if never: cost above capacity).
* ``expires`` is the time after which the stored state equals a fresh one and may be dropped.

Definitions (the property tests check them against a reference model):

``gcra``
    Generic Cell Rate Algorithm (virtual scheduling). Sustained ``rate`` per ``per`` with up
    to ``burst`` units at once: over any interval of length ``d`` at most
    ``burst + rate * d / per`` units are admitted. Equivalent to ``token_bucket`` but one
    number of state.
``token_bucket``
    A bucket of ``burst`` tokens refilled continuously at ``rate / per``; a request takes
    ``cost`` tokens. Same admission bound as GCRA.
``fixed_window``
    At most ``rate`` units per aligned window ``[k*per, (k+1)*per)``; ``burst`` is unused.
    Up to ``2*rate`` can pass around a window edge.
``sliding_window``
    Sliding-window counter (the Cloudflare/Kong approximation): admits while
    ``prev * (1 - elapsed/per) + cur + cost <= rate``, where ``prev``/``cur`` count the
    previous and current aligned windows. Never more than ``rate`` per aligned window and
    much smoother than ``fixed_window`` at edges; ``burst`` is unused.

The Redis Lua script (:mod:`.lua`) implements the same definitions; both are tested against
each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

State = list[float]
Step = tuple[bool, State | None, float, float, float, float]
StepFn = Callable[[State | None, float, float, float, float, float], Step]

#: tolerance, as a fraction of one emission interval, absorbing float rounding at boundaries
EPS: Final = 1e-9
INF: Final = math.inf
#: the algorithms as small ints (``local.LocalLimiter`` dispatches on them)
GCRA: Final = 0
TOKEN_BUCKET: Final = 1
FIXED_WINDOW: Final = 2
SLIDING_WINDOW: Final = 3


def gcra(
    state: State | None, rate: float, per: float, burst: float, now: float, cost: float
) -> Step:
    t = per / rate
    tat = state[0] if state is not None and state[0] > now else now
    new_tat = tat + cost * t
    allow_at = new_tat - burst * t
    if allow_at - now > EPS * t:
        remaining = max(0.0, math.floor((now - (tat - burst * t)) / t + EPS))
        retry = INF if cost > burst else allow_at - now
        return (False, None, remaining, tat - now, retry, 0.0)
    remaining = max(0.0, math.floor((now - allow_at) / t + EPS))
    return (True, [new_tat], remaining, new_tat - now, 0.0, new_tat)


def token_bucket(
    state: State | None, rate: float, per: float, burst: float, now: float, cost: float
) -> Step:
    if state is None:
        tokens = burst
    else:
        tokens = min(burst, state[0] + max(0.0, now - state[1]) * rate / per)
    if tokens + EPS < cost:
        retry = INF if cost > burst else (cost - tokens) * per / rate
        return (False, None, math.floor(tokens + EPS), (burst - tokens) * per / rate, retry, 0.0)
    tokens -= cost
    reset = (burst - tokens) * per / rate
    return (True, [tokens, now], max(0.0, math.floor(tokens + EPS)), reset, 0.0, now + reset)


def fixed_window(
    state: State | None, rate: float, per: float, burst: float, now: float, cost: float
) -> Step:
    wid = math.floor(now / per)
    count = state[1] if state is not None and state[0] == wid else 0.0
    end = (wid + 1) * per
    if count + cost > rate:
        retry = INF if cost > rate else end - now
        return (False, None, max(0.0, rate - count), end - now, retry, 0.0)
    count += cost
    return (True, [float(wid), count], rate - count, end - now, 0.0, end)


def sliding_window(
    state: State | None, rate: float, per: float, burst: float, now: float, cost: float
) -> Step:
    wid = math.floor(now / per)
    cur = prev = 0.0
    if state is not None:
        if state[0] == wid:
            cur, prev = state[1], state[2]
        elif state[0] == wid - 1:
            prev = state[1]
    elapsed = now - wid * per
    weight = 1.0 - elapsed / per
    est = prev * weight + cur
    if est + cost > rate + EPS:
        if cost > rate:
            retry = INF
        elif cur + cost <= rate:
            # prev > 0 here: wait until the previous window's weight has decayed enough
            retry = per * (1.0 - (rate - cur - cost) / prev) - elapsed
        else:
            # wait for the next window, where this window's count decays from full weight
            retry = per - elapsed + max(0.0, per * (1.0 - (rate - cost) / cur))
        reset = (2 * per - elapsed) if cur > 0 else (per - elapsed)
        return (False, None, max(0.0, math.floor(rate - est + EPS)), reset, retry, 0.0)
    cur += cost
    remaining = max(0.0, math.floor(rate - (prev * weight + cur) + EPS))
    if cur > 0:
        reset, expires = 2 * per - elapsed, (wid + 2) * per
    else:
        reset, expires = (per - elapsed) if prev > 0 else 0.0, (wid + 1) * per
    return (True, [float(wid), cur, prev], remaining, reset, 0.0, expires)


ALGORITHMS: Final[dict[str, StepFn]] = {
    "gcra": gcra,
    "token_bucket": token_bucket,
    "fixed_window": fixed_window,
    "sliding_window": sliding_window,
}

#: algorithms whose capacity is ``burst`` (the window algorithms use ``rate``)
USES_BURST: Final = frozenset({"gcra", "token_bucket"})

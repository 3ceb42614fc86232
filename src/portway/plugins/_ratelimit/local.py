"""The in-process limiter: exact limiting within one process, and the decision type every
limiter returns. Compiled with mypyc (setup.py ``HOT_MODULES``): it runs on every request of
a locally limited route."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Final

from portway.plugins._ratelimit.algorithms import (
    ALGORITHMS,
    EPS,
    FIXED_WINDOW,
    GCRA,
    SLIDING_WINDOW,
    TOKEN_BUCKET,
    State,
    Step,
    fixed_window,
    gcra,
    sliding_window,
    token_bucket,
)

#: new keys between two sweeps of expired entries
SWEEP_EVERY: Final = 4096


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One limit: ``rate`` units per ``per`` seconds, ``burst`` units of capacity.

    ``name`` is the policy name in the ``RateLimit`` headers; ``window`` the whole seconds
    advertised as the policy window.
    """

    name: str
    rate: float
    per: float
    burst: float

    @property
    def window(self) -> int:
        return max(1, math.ceil(self.per))

    def scaled(self, instances: int) -> LimitSpec:
        """This limit divided between ``instances`` processes (at least one unit each)."""
        if instances <= 1:
            return self
        return LimitSpec(
            self.name,
            max(1e-9, self.rate / instances),
            self.per,
            max(1.0, self.burst / instances),
        )


class Decision:
    """Outcome of one request against all its limits.

    ``remaining``/``reset`` are per limit (units, seconds); ``retry_after`` is seconds until
    the request would be admitted (0 when allowed, ``inf`` when its cost can never fit).
    """

    __slots__ = ("allowed", "remaining", "reset", "retry_after")

    def __init__(
        self,
        allowed: bool,
        remaining: Sequence[float],
        reset: Sequence[float],
        retry_after: float,
    ) -> None:
        self.allowed = allowed
        self.remaining = remaining
        self.reset = reset
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self.allowed}, remaining={list(self.remaining)}, "
            f"reset={list(self.reset)}, retry_after={self.retry_after})"
        )


class _Entry:
    """One key's stored state, updated in place (no new tuple and list per request)."""

    __slots__ = ("expires", "states")

    def __init__(self, expires: float, states: list[State | None]) -> None:
        self.expires = expires
        self.states = states


class LocalLimiter:
    """Exact limiting within one process; state in a dict keyed by the request key.

    Memory is bounded: entries whose state has returned to "fresh" are swept periodically, and
    past ``max_keys`` the oldest entries are evicted (which forgets their usage: a key flood
    degrades towards admitting, never towards rejecting legitimate clients).
    """

    def __init__(
        self,
        algorithm: str,
        limits: Sequence[LimitSpec],
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise KeyError(algorithm)
        #: the algorithm as a small int: a direct (compiled) call, no function object
        self._algo = _CODES[algorithm]
        self.limits = tuple(limits)
        self._params = [(lim.rate, lim.per, lim.burst) for lim in self.limits]
        self._single = len(self._params) == 1
        self._rate = self._params[0][0]
        self._per = self._params[0][1]
        self._burst = self._params[0][2]
        #: one GCRA limit: a stored key is decided inline (:meth:`decide`)
        self._gcra1 = self._single and self._algo == GCRA
        #: the numbers of the last admission :meth:`admit` made without a decision
        self.last_remaining = 0.0
        self.last_reset = 0.0
        self._clock = clock
        self._max_keys = max_keys
        # key -> its expiry and states per limit
        self._entries: dict[str, _Entry] = {}
        self._ops = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _step(
        self, state: State | None, rate: float, per: float, burst: float, now: float, cost: float
    ) -> Step:
        a = self._algo
        if a == GCRA:
            return gcra(state, rate, per, burst, now, cost)
        if a == TOKEN_BUCKET:
            return token_bucket(state, rate, per, burst, now, cost)
        if a == SLIDING_WINDOW:
            return sliding_window(state, rate, per, burst, now, cost)
        return fixed_window(state, rate, per, burst, now, cost)

    def _gcra_stored(self, entry: _Entry, st: State, now: float, cost: float) -> bool:
        """``gcra`` for a stored key of a one-limit GCRA limiter, the same arithmetic
        inline: when admitted, the state is updated in place (no step tuple, no new list),
        ``last_remaining`` / ``last_reset`` set, and True returned; False: nothing changed."""
        rate = self._rate
        per = self._per
        burst = self._burst
        t = per / rate
        tat = st[0] if st[0] > now else now
        new_tat = tat + cost * t
        allow_at = new_tat - burst * t
        if allow_at - now > EPS * t:
            return False
        self.last_remaining = max(0.0, math.floor((now - allow_at) / t + EPS))
        self.last_reset = new_tat - now
        st[0] = new_tat
        entry.expires = new_tat
        return True

    def admit(self, key: str, cost: float) -> Decision | None:
        """:meth:`decide`, but None when a stored key of a one-limit GCRA limiter is
        admitted (the common case; no object made): its numbers are then in
        ``last_remaining`` / ``last_reset`` until the next call."""
        clock = self._clock
        now = monotonic() if clock is None else clock()
        if self._gcra1:
            entry = self._entries.get(key)
            if entry is not None:
                st = entry.states[0]
                if st is not None and self._gcra_stored(entry, st, now, cost):
                    return None
        return self._decide(key, cost, now)

    def decide(self, key: str, cost: float) -> Decision:
        clock = self._clock
        now = monotonic() if clock is None else clock()
        return self._decide(key, cost, now)

    def _decide(self, key: str, cost: float, now: float) -> Decision:
        entries = self._entries
        entry = entries.get(key)
        states: list[State | None]
        if entry is None:
            # sweeping is amortised over new keys only: a hot key pays nothing for it
            self._ops += 1
            if self._ops >= SWEEP_EVERY or len(entries) >= self._max_keys:
                self._sweep(now)
            states = [None] * len(self._params)
        else:
            states = entry.states
            if self._gcra1:
                st = states[0]
                if st is not None and self._gcra_stored(entry, st, now, cost):
                    return Decision(True, (self.last_remaining,), (self.last_reset,), 0.0)
        if self._single:
            ok, new, rem, reset, retry, expires = self._step(
                states[0], self._rate, self._per, self._burst, now, cost
            )
            if ok:
                if entry is None:
                    entries[key] = _Entry(expires, [new])
                else:
                    entry.expires = expires
                    states[0] = new
            return Decision(ok, (rem,), (reset,), retry)
        allowed = True
        rems: list[float] = []
        resets: list[float] = []
        news: list[State | None] = []
        retry_after = 0.0
        max_exp = 0.0
        for i, (rate, per, burst) in enumerate(self._params):
            ok, new, rem, reset, retry, expires = self._step(states[i], rate, per, burst, now, cost)
            rems.append(rem)
            resets.append(reset)
            news.append(new)
            if not ok:
                allowed = False
                retry_after = max(retry_after, retry)
            elif expires > max_exp:
                max_exp = expires
        if allowed:
            self._entries[key] = _Entry(max_exp, news)
        else:
            # nothing was consumed: limits that would have admitted report what is left
            rems = [r + cost if n is not None else r for r, n in zip(rems, news, strict=True)]
        return Decision(allowed, rems, resets, retry_after)

    def _sweep(self, now: float) -> None:
        self._ops = 0
        entries = self._entries
        dead = [k for k, e in entries.items() if e.expires <= now]
        for k in dead:
            del entries[k]
        excess = len(entries) - self._max_keys
        if excess > 0:
            # dicts iterate in insertion order: the first keys are the least recently created
            for k in list(entries)[:excess]:
                del entries[k]


_CODES: Final[dict[str, int]] = {
    "gcra": GCRA,
    "token_bucket": TOKEN_BUCKET,
    "sliding_window": SLIDING_WINDOW,
    "fixed_window": FIXED_WINDOW,
}

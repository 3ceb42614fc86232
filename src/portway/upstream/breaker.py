"""Per-target circuit breaker: a pure state machine driven by an injected clock.

closed ──(failure ratio ≥ threshold over the rolling window, with ≥ min_requests)──▶ open
open ──(open_for elapsed, on the next ``allow``)──▶ half_open
half_open ──(``half_open_probes`` successes)──▶ closed
half_open ──(any failure)──▶ open
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from portway.config.schema import CircuitBreakerConfig

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"

#: the rolling window is kept as this many buckets (counts age out one bucket at a time)
_BUCKETS: Final = 10


class CircuitBreaker:
    """Counts outcomes of one target and decides whether requests may be sent to it.

    Contract:

    - ``allow(now)`` is called once per attempt *that is about to be sent*; it returns False
      while open, and in half-open reserves one of the ``half_open_probes`` probe slots;
    - ``record(ok, now)`` is called once per attempt with its outcome;
    - ``release(now)`` gives back a half-open probe slot of an attempt abandoned without an
      outcome (client went away);
    - ``available(now)`` is the side-effect-free form of ``allow`` (used by balancers);
    - ``state`` is ``"closed"``, ``"open"`` or ``"half_open"``.

    A probe whose outcome never arrives would wedge half-open forever, so outstanding probe
    slots are reclaimed after another ``open_for`` without progress.
    """

    __slots__ = (
        "_bucket_len",
        "_clock",
        "_fails",
        "_half_open_at",
        "_head",
        "_head_t",
        "_oks",
        "_probe_ok",
        "_probes_out",
        "cfg",
        "opened_at",
        "state",
    )

    def __init__(
        self, cfg: CircuitBreakerConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cfg = cfg
        self._clock = clock
        self.state = CLOSED
        self.opened_at = 0.0
        self._bucket_len = max(cfg.window / _BUCKETS, 1e-3)
        self._oks = [0] * _BUCKETS
        self._fails = [0] * _BUCKETS
        self._head = 0
        self._head_t = -math.inf
        self._probes_out = 0
        self._probe_ok = 0
        self._half_open_at = 0.0

    # --- rolling window -------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        slot = float(math.floor(now / self._bucket_len))
        if slot == self._head_t:
            return
        steps = slot - self._head_t
        if steps >= _BUCKETS or steps < 0:
            self._oks = [0] * _BUCKETS
            self._fails = [0] * _BUCKETS
        else:
            for _ in range(int(steps)):
                self._head = (self._head + 1) % _BUCKETS
                self._oks[self._head] = 0
                self._fails[self._head] = 0
        self._head_t = slot

    def counts(self, now: float | None = None) -> tuple[int, int]:
        """(successes, failures) in the current window."""
        self._advance(self._clock() if now is None else now)
        return sum(self._oks), sum(self._fails)

    # --- state machine --------------------------------------------------------------------
    def _to_half_open(self, now: float) -> None:
        self.state = HALF_OPEN
        self._probes_out = 0
        self._probe_ok = 0
        self._half_open_at = now

    def _to_open(self, now: float) -> None:
        self.state = OPEN
        self.opened_at = now

    def _to_closed(self) -> None:
        self.state = CLOSED
        self._oks = [0] * _BUCKETS
        self._fails = [0] * _BUCKETS

    def _reclaim(self, now: float) -> None:
        if self._probes_out and now - self._half_open_at >= self.cfg.open_for:
            self._probes_out = 0
            self._half_open_at = now

    def available(self, now: float | None = None) -> bool:
        if self.state == CLOSED:
            return True
        t = self._clock() if now is None else now
        if self.state == OPEN:
            return t - self.opened_at >= self.cfg.open_for
        if self._probes_out and t - self._half_open_at >= self.cfg.open_for:
            return True
        return self._probes_out + self._probe_ok < self.cfg.half_open_probes

    def allow(self, now: float | None = None) -> bool:
        t = self._clock() if now is None else now
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if t - self.opened_at < self.cfg.open_for:
                return False
            self._to_half_open(t)
        self._reclaim(t)
        if self._probes_out + self._probe_ok >= self.cfg.half_open_probes:
            return False
        self._probes_out += 1
        return True

    def release(self, now: float | None = None) -> None:
        if self.state == HALF_OPEN and self._probes_out:
            self._probes_out -= 1

    def record(self, ok: bool, now: float | None = None) -> None:
        t = self._clock() if now is None else now
        if self.state == CLOSED:
            self._advance(t)
            if ok:
                self._oks[self._head] += 1
                return
            self._fails[self._head] += 1
            oks, fails = sum(self._oks), sum(self._fails)
            total = oks + fails
            if total >= self.cfg.min_requests and fails >= self.cfg.failure_ratio * total:
                self._to_open(t)
        elif self.state == HALF_OPEN:
            if self._probes_out:
                self._probes_out -= 1
            if not ok:
                self._to_open(t)
                return
            self._probe_ok += 1
            if self._probe_ok >= self.cfg.half_open_probes:
                self._to_closed()
        # OPEN: outcomes of requests sent before the trip say nothing new

    def retry_in(self, now: float | None = None) -> float:
        """Seconds until this breaker lets a request through (0 when it already would)."""
        t = self._clock() if now is None else now
        if self.state == OPEN:
            return max(0.0, self.opened_at + self.cfg.open_for - t)
        if self.state == HALF_OPEN and not self.available(t):
            return max(0.0, self._half_open_at + self.cfg.open_for - t)
        return 0.0

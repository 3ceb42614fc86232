"""The Redis store's failure backoff (``state/redis.py``, ``state/resp.py``)."""

from __future__ import annotations


class Backoff:
    """Circuit-breaker-like gate for a remote store; a pure state machine over ``now``.

    ``allow(now)`` is True while closed; when open it is False until the deadline, then True
    for exactly one probe (half-open) until ``success``/``failure`` is reported.
    """

    __slots__ = ("_delay", "_max", "_min", "_probing", "_until", "failures")

    def __init__(self, backoff_min: float = 0.5, backoff_max: float = 5.0) -> None:
        self._min = backoff_min
        self._max = backoff_max
        self._delay = 0.0
        self._until = 0.0
        self._probing = False
        self.failures = 0

    @property
    def is_open(self) -> bool:
        return self._delay > 0.0

    def allow(self, now: float) -> bool:
        if self._delay == 0.0:
            return True
        if self._probing or now < self._until:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._delay = 0.0
        self._probing = False
        self.failures = 0

    def failure(self, now: float) -> bool:
        """Record a failure; returns True when this failure opened a closed breaker."""
        opened = self._delay == 0.0
        self._delay = self._min if opened else min(self._max, self._delay * 2)
        self._until = now + self._delay
        self._probing = False
        self.failures += 1
        return opened

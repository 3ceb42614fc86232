"""Coarse deadlines for many objects with one periodic callback.

Arming and cancelling an event-loop timer per request (header timeout, idle timeout, upstream
read timeout) costs several microseconds each on the hot path. Instead, an object sets a plain
``deadline`` attribute (loop time) and registers once; one sweep every ``interval`` seconds
calls ``expired(now)`` on the objects whose deadline has passed. Timeouts therefore fire up to
``interval`` late, which is immaterial for second-scale timeouts (nginx does the same with its
coarse timer tree).
"""

from __future__ import annotations

import asyncio
import math
from typing import Final, Protocol

from portway.http.loops import PerLoop

INTERVAL: Final = 0.05
NEVER: Final = math.inf


class Expiring(Protocol):
    deadline: float

    def expired(self, now: float) -> None: ...


class Sweeper:
    """One per event loop; see :func:`sweeper_for`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = INTERVAL) -> None:
        self._loop = loop
        self._interval = interval
        self._items: set[Expiring] = set()
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, obj: Expiring) -> None:
        self._items.add(obj)
        if self._handle is None:
            self._handle = self._loop.call_later(self._interval, self._tick)

    def unwatch(self, obj: Expiring) -> None:
        self._items.discard(obj)

    def _tick(self) -> None:
        self._handle = None
        now = self._loop.time()
        for obj in [o for o in self._items if o.deadline <= now]:
            try:
                obj.expired(now)
            except Exception:  # one broken object must not stop timeouts for the others
                self._items.discard(obj)
        if self._items and not self._loop.is_closed():
            self._handle = self._loop.call_later(self._interval, self._tick)

    def __len__(self) -> int:
        return len(self._items)


#: the sweeper of a loop
sweeper_for: PerLoop[Sweeper] = PerLoop(Sweeper)

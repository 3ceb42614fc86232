"""Coarse deadlines for many objects: one periodic callback over deadline buckets.

Arming and cancelling an event-loop timer per request (header timeout, idle timeout, upstream
read timeout) costs several microseconds each on the hot path. Instead, an object sets a plain
``deadline`` attribute (loop time) and registers once; a tick every ``interval`` seconds calls
``expired(now)`` on the objects whose deadline has passed. Timeouts therefore fire up to
``interval`` late, which is immaterial for second-scale timeouts (nginx does the same with its
coarse timer tree).

Scaling (a timer wheel with lazy re-filing): an object is *filed* in the bucket of the tick at
or after its deadline, and ``due`` records that bucket's time. A tick visits only the buckets
that came due, so 10 000 idle keep-alive connections with a 60 s idle timeout cost one visit
each per minute, not one per tick (the old sweep looked at every watched object 20 times a
second). Moving a deadline *later* costs nothing: the object stays filed early, and when its
bucket comes due it is filed again at its current deadline. Moving it *earlier* than ``due``
(a finite deadline after ``NEVER``, a header timeout shorter than the idle one) must be told
with :meth:`Sweeper.refile` — the owners do it in one helper (``_set_deadline``), as a float
comparison on the hot path and a set move about once per timeout period.

Contract for a watched object: attributes ``deadline`` (loop time, ``NEVER`` for none) and
``due`` (owned by the sweeper; start it at ``UNWATCHED``), method ``expired(now)``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Final, Protocol

from portway.http.loops import PerLoop

INTERVAL: Final = 0.05
NEVER: Final = math.inf
#: ``due`` of an object that is not watched
UNWATCHED: Final = -1.0


class Expiring(Protocol):
    deadline: float
    #: the sweeper's: the time of the bucket this object is filed in (NEVER: watched, not
    #: filed; UNWATCHED: not watched)
    due: float

    def expired(self, now: float) -> None: ...


class Sweeper:
    """One per event loop; see :func:`sweeper_for`. Whether an object is watched is its
    ``due`` (no set of all watched objects: a watched idle object costs nothing here until
    its deadline is finite, then one slot in one bucket)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = INTERVAL) -> None:
        self._loop = loop
        self._interval = interval
        #: bucket number (``ceil(deadline / interval)``) → the objects filed there
        self._buckets: dict[int, set[Expiring]] = {}
        #: the last bucket number a tick processed
        self._done = -1
        self._handle: asyncio.TimerHandle | None = None
        #: how many objects are watched
        self._count = 0
        #: objects visited by ticks so far (a deterministic measure of the sweep's cost)
        self.visited = 0
        #: ``loop.time`` bound once, shared by the loop's connections (a bound method per
        #: connection is an allocation it would keep for life)
        self.clock: Callable[[], float] = loop.time

    def watch(self, obj: Expiring) -> None:
        """Start watching ``obj`` (again: its deadline is filed anew)."""
        if obj.due == UNWATCHED:
            self._count += 1
        else:
            self._unfile(obj)
        obj.due = NEVER
        self._file(obj)
        if self._handle is None and not self._loop.is_closed():
            self._handle = self._loop.call_later(self._interval, self._tick)

    def unwatch(self, obj: Expiring) -> None:
        if obj.due == UNWATCHED:
            return
        self._unfile(obj)
        obj.due = UNWATCHED
        self._count -= 1

    def refile(self, obj: Expiring) -> None:
        """``obj.deadline`` moved earlier than ``obj.due``: file it where it now belongs."""
        if obj.due != UNWATCHED:
            self._unfile(obj)
            self._file(obj)

    def _file(self, obj: Expiring) -> None:
        d = obj.deadline
        if d == NEVER:
            return
        k = math.ceil(d / self._interval)
        if k <= self._done:
            k = self._done + 1  # already past: the next tick takes it
        b = self._buckets.get(k)
        if b is None:
            b = self._buckets[k] = set()
        b.add(obj)
        obj.due = k * self._interval

    def _unfile(self, obj: Expiring) -> None:
        """Take ``obj`` out of its bucket (it stays watched: ``due`` becomes NEVER)."""
        due = obj.due
        if due == NEVER:
            return
        obj.due = NEVER
        k = round(due / self._interval)
        b = self._buckets.get(k)
        if b is not None:
            b.discard(obj)
            if not b:
                del self._buckets[k]

    def _tick(self) -> None:
        self._handle = None
        self.tick(self._loop.time())
        if self._count > 0 and not self._loop.is_closed():
            self._handle = self._loop.call_later(self._interval, self._tick)

    def tick(self, now: float) -> None:
        """Expire what is due at ``now``; re-file what was filed early (its deadline moved)."""
        last = math.floor(now / self._interval)
        first = self._done + 1
        self._done = max(self._done, last)
        if first > last or not self._buckets:
            return
        if last - first > len(self._buckets):
            # a long stall (or the first tick): look at the buckets there are, not every
            # tick number in between
            keys = sorted(k for k in self._buckets if k <= last)
        else:
            keys = [k for k in range(first, last + 1) if k in self._buckets]
        for k in keys:
            objs = self._buckets.pop(k)
            self.visited += len(objs)
            due = k * self._interval
            for obj in objs:
                if obj.due != due:
                    continue  # unwatched or re-filed by an earlier one's ``expired``
                obj.due = NEVER
                if obj.deadline <= now:
                    try:
                        obj.expired(now)
                    except Exception:  # one broken object must not stop the others' timeouts
                        if obj.due != UNWATCHED:
                            self._unfile(obj)
                            obj.due = UNWATCHED
                            self._count -= 1
                        continue
                if obj.due == NEVER:  # still watched, not re-filed by ``expired``
                    self._file(obj)

    def filed(self) -> int:
        """How many objects are filed in a bucket (watched ones with a finite deadline)."""
        return sum(len(b) for b in self._buckets.values())

    def __len__(self) -> int:
        return self._count


#: the sweeper of a loop
sweeper_for: PerLoop[Sweeper] = PerLoop(Sweeper)

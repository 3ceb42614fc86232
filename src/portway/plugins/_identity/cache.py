"""A small bounded LRU with per-entry expiry, for verified-credential caches."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlLru(Generic[K, V]):
    """At most ``size`` entries; each expires at the deadline given to :meth:`put`.

    Not thread-safe: used from the event loop only. ``clock`` is injectable for tests.
    """

    __slots__ = ("_clock", "_d", "_size")

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._clock = clock
        self._d: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._d.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._d[key]
            return None
        self._d.move_to_end(key)
        return item[1]

    def put(self, key: K, value: V, ttl: float) -> None:
        if self._size <= 0 or ttl <= 0:
            return
        self._d[key] = (self._clock() + ttl, value)
        self._d.move_to_end(key)
        while len(self._d) > self._size:
            self._d.popitem(last=False)

    def clear(self) -> None:
        self._d.clear()

    def __len__(self) -> int:
        return len(self._d)

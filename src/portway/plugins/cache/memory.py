"""In-process LRU store bounded by bytes."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from portway.plugins.cache.entry import Stored
from portway.plugins.cache.store import VERSION_TTL, Guard


class MemoryStore:
    """LRU over ``max_bytes`` (object sizes include header and bookkeeping overhead).

    Objects larger than ``max_object`` are refused. Expired objects are dropped when touched
    and evicted first in LRU order otherwise; ``clock`` is monotonic seconds (injectable for
    tests).

    Invalidation versions (see :mod:`portway.plugins.cache.store`) live in a dict of their
    own, outside the byte budget (a few dozen bytes each), swept when it doubles.
    """

    def __init__(
        self,
        max_bytes: int,
        max_object: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_object = max_object
        self._clock = clock
        self._items: OrderedDict[str, tuple[Stored, float, int]] = OrderedDict()
        self._bytes = 0
        self._evictions = 0
        self._refused = 0
        self._guard_refused = 0
        #: key → (invalidation version, monotonic deadline)
        self._versions: dict[str, tuple[str, float]] = {}
        self._sweep_at = 1024

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, key: str) -> Stored | None:
        item = self._items.get(key)
        if item is None:
            return None
        obj, deadline, size = item
        if deadline <= self._clock():
            del self._items[key]
            self._bytes -= size
            return None
        self._items.move_to_end(key)
        return obj

    def hit(self, key: str) -> Stored | None:
        """:meth:`get` without a coroutine (the task-free path's lookup): one dict get; the
        object becomes the most recently used."""
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._items[key]
            self._bytes -= item[2]
            return None
        self._items.move_to_end(key)
        return item[0]

    def get_nowait(self, key: str) -> Stored | None:
        item = self._items.get(key)
        if item is None or item[1] <= self._clock():
            return None
        return item[0]

    async def lookup(self, key: str) -> tuple[Stored | None, str | None]:
        return await self.get(key), self.version_nowait(key)

    async def version(self, key: str) -> str:
        return self.version_nowait(key)

    def version_nowait(self, key: str) -> str:
        v = self._versions.get(key)
        if v is None:
            return ""
        if v[1] <= self._clock():
            del self._versions[key]
            return ""
        return v[0]

    async def invalidate(self, *keys: str) -> int:
        deadline = self._clock() + VERSION_TTL
        for k in keys:
            self._versions[k] = (secrets.token_hex(8), deadline)
        if len(self._versions) >= self._sweep_at:
            now = self._clock()
            self._versions = {k: v for k, v in self._versions.items() if v[1] > now}
            self._sweep_at = max(1024, 2 * len(self._versions))
        return await self.delete(*keys)

    async def put(self, key: str, obj: Stored, ttl: float, guard: Guard | None = None) -> bool:
        if guard is not None and self.version_nowait(guard.key) != guard.version:
            self._guard_refused += 1
            return False
        size = obj.size + len(key)
        if size > self.max_object + 65536 or size > self.max_bytes or ttl <= 0:
            self._refused += 1
            return False
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[2]
        while self._bytes + size > self.max_bytes and self._items:
            _, (_, _, osize) = self._items.popitem(last=False)
            self._bytes -= osize
            self._evictions += 1
        self._items[key] = (obj, self._clock() + ttl, size)
        self._bytes += size
        return True

    async def delete(self, *keys: str) -> int:
        n = 0
        for k in keys:
            item = self._items.pop(k, None)
            if item is not None:
                self._bytes -= item[2]
                n += 1
        return n

    async def delete_prefix(self, prefix: str) -> int:
        doomed = [k for k in self._items if k.startswith(prefix)]
        return await self.delete(*doomed)

    async def clear(self) -> int:
        n = len(self._items)
        self._items.clear()
        self._bytes = 0
        return n

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        await self.clear()

    def stats(self) -> dict[str, int]:
        return {
            "memory_bytes": self._bytes,
            "memory_objects": len(self._items),
            "memory_evictions": self._evictions,
            "memory_refused": self._refused,
            "memory_guard_refused": self._guard_refused,
        }

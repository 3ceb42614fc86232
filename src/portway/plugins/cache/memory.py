"""In-process LRU store bounded by bytes."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from portway.plugins.cache.entry import Stored


class MemoryStore:
    """LRU over ``max_bytes`` (object sizes include header and bookkeeping overhead).

    Objects larger than ``max_object`` are refused. Expired objects are dropped when touched
    and evicted first in LRU order otherwise; ``clock`` is monotonic seconds (injectable for
    tests).
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

    def get_nowait(self, key: str) -> Stored | None:
        item = self._items.get(key)
        if item is None or item[1] <= self._clock():
            return None
        return item[0]

    async def put(self, key: str, obj: Stored, ttl: float) -> bool:
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
        }

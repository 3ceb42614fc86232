"""In-process state store: exact within one process, shared by nothing else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable


class MemoryStore:
    """A :class:`~portway.state.base.StateStore` held in a dict.

    Expired keys are dropped lazily on access and by an amortised sweep, so idle keys do not
    accumulate. Pub/sub delivers to subscribers of this process only. ``clock`` is injectable
    for tests (monotonic seconds).
    """

    _SWEEP_EVERY = 1024

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, tuple[bytes, float | None]] = {}
        self._subs: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._ops = 0
        self._closed = False

    def _live(self, key: str, now: float) -> tuple[bytes, float | None] | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= now:
            del self._data[key]
            return None
        return item

    def _tick(self, now: float) -> None:
        self._ops += 1
        if self._ops % self._SWEEP_EVERY == 0:
            dead = [k for k, (_, exp) in self._data.items() if exp is not None and exp <= now]
            for k in dead:
                del self._data[k]

    async def get(self, key: str) -> bytes | None:
        item = self._live(key, self._clock())
        return item[0] if item is not None else None

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        now = self._clock()
        self._tick(now)
        self._data[key] = (value, now + ttl if ttl is not None else None)

    async def delete(self, *keys: str) -> int:
        now = self._clock()
        n = 0
        for k in keys:
            if self._live(k, now) is not None:
                del self._data[k]
                n += 1
        return n

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        now = self._clock()
        self._tick(now)
        item = self._live(key, now)
        if item is None:
            value = amount
            exp = now + ttl if ttl is not None else None
        else:
            try:
                value = int(item[0]) + amount
            except ValueError as e:
                raise ValueError(f"value at {key!r} is not an integer") from e
            exp = item[1]
        self._data[key] = (str(value).encode(), exp)
        return value

    async def publish(self, channel: str, message: bytes) -> None:
        for q in self._subs.get(channel, ()):
            q.put_nowait(message)

    async def subscribe(self, channel: str) -> AsyncIterator[bytes]:
        q: asyncio.Queue[bytes] = asyncio.Queue()
        self._subs.setdefault(channel, set()).add(q)
        try:
            while True:
                yield await q.get()
        finally:
            subs = self._subs.get(channel)
            if subs is not None:
                subs.discard(q)
                if not subs:
                    del self._subs[channel]

    def __len__(self) -> int:
        return len(self._data)

    async def aclose(self) -> None:
        self._closed = True
        self._data.clear()

"""Memory in front of Redis.

The memory tier keeps objects at most ``front_ttl`` seconds, which bounds how long one
instance can serve a copy another instance has replaced or purged; purges are also published
on a Redis channel so every instance drops its memory copy at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from portway.plugins.cache.entry import Stored
from portway.plugins.cache.memory import MemoryStore
from portway.plugins.cache.redis_store import REFUSED, STORED, RedisStore
from portway.plugins.cache.store import Guard
from portway.tasks import stop_tasks

log = logging.getLogger("portway.cache")


class TieredStore:
    """Reads memory first, then Redis (filling memory); writes and deletes go to both.

    Invalidation versions are Redis's: a guarded write goes to Redis first and reaches the
    memory tier only when Redis did not refuse it (an unavailable Redis still lets the memory
    tier cache, bounded by ``front_ttl``)."""

    def __init__(self, front: MemoryStore, back: RedisStore, *, front_ttl: float = 5.0) -> None:
        self.front = front
        self.back = back
        self.front_ttl = front_ttl
        self.channel = back.prefix + "invalidate"
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def get(self, key: str) -> Stored | None:
        obj = await self.front.get(key)
        if obj is not None:
            return obj
        obj = await self.back.get(key)
        if obj is not None:
            remaining = obj.expires_at - time.time()
            if remaining > 0:
                await self.front.put(key, obj, min(remaining, self.front_ttl))
        return obj

    async def lookup(self, key: str) -> tuple[Stored | None, str | None]:
        obj = await self.front.get(key)
        if obj is not None:
            # answered without Redis; the caller asks version() only if it goes upstream
            return obj, None
        obj, ver = await self.back.lookup(key)
        if obj is not None:
            remaining = obj.expires_at - time.time()
            if remaining > 0:
                await self.front.put(key, obj, min(remaining, self.front_ttl))
        return obj, ver

    async def version(self, key: str) -> str:
        return await self.back.version(key)

    async def put(self, key: str, obj: Stored, ttl: float, guard: Guard | None = None) -> bool:
        outcome = await self.back.put_outcome(key, obj, ttl, guard)
        if outcome == REFUSED:
            return False
        await self.front.put(key, obj, min(ttl, self.front_ttl))
        return outcome == STORED

    async def invalidate(self, *keys: str) -> int:
        await self.front.invalidate(*keys)
        n = await self.back.invalidate(*keys)
        for k in keys:
            await self._publish(b"k" + k.encode())
        return n

    async def _publish(self, message: bytes) -> None:
        try:
            await self.back.client.publish(self.channel, message)
        except self.back.failures as e:
            self.back._failed("publish", e)

    async def delete(self, *keys: str) -> int:
        await self.front.delete(*keys)
        n = await self.back.delete(*keys)
        for k in keys:
            await self._publish(b"k" + k.encode())
        return n

    async def delete_prefix(self, prefix: str) -> int:
        await self.front.delete_prefix(prefix)
        n = await self.back.delete_prefix(prefix)
        await self._publish(b"p" + prefix.encode())
        return n

    async def clear(self) -> int:
        await self.front.clear()
        n = await self.back.clear()
        await self._publish(b"p")
        return n

    async def _apply(self, msg: bytes) -> None:
        kind, arg = msg[:1], msg[1:].decode(errors="replace")
        if kind == b"k":
            await self.front.delete(arg)
        elif kind == b"p":
            await self.front.delete_prefix(arg)

    async def _listen(self) -> None:
        # reconnects forever: a lost subscription only widens the front_ttl staleness bound
        while True:
            pubsub: Any = self.back.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self._ready.set()
                while True:
                    m = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if m is not None and isinstance(m.get("data"), bytes):
                        await self._apply(m["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.back._failed("subscribe", e)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def start(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="cache-invalidate")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ready.wait(), 1.0)

    async def aclose(self) -> None:
        await stop_tasks(self._listener)
        self._listener = None
        await self.front.aclose()
        await self.back.aclose()

    def stats(self) -> dict[str, int]:
        return {**self.front.stats(), **self.back.stats()}

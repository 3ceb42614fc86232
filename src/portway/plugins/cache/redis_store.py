"""Redis store: shares cached responses between gateway instances."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import TYPE_CHECKING, Any

from portway.plugins.cache.entry import Stored, decode, encode
from portway.state.redis import redis_failures

if TYPE_CHECKING:
    # imported when a store is built: a gateway without a Redis cache never loads redis-py
    import redis.asyncio as aioredis

log = logging.getLogger("portway.cache")

_GLOB = re.compile(r"([*?\[\]\\])")


def glob_escape(s: str) -> str:
    return _GLOB.sub(r"\\\1", s)


DOWN_FOR = 1.0


class RedisStore:
    """Objects live at ``prefix + key`` with a Redis TTL (``PX``), encoded by
    :func:`~portway.plugins.cache.entry.encode`. Backend errors count as misses."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        timeout: float = 0.5,
        max_object: int | None = None,
        client: aioredis.Redis | None = None,
    ) -> None:
        from portway.state.connect import redis_client

        #: what a backend failure raises (counted as a miss)
        self.failures = redis_failures()
        self.prefix = prefix
        self.max_object = max_object
        self.client: aioredis.Redis = client or redis_client(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._errors = 0
        self._last_error_log = 0.0
        #: after a failure Redis is skipped (every op is a miss) until this loop time, so an
        #: unreachable Redis costs requests nothing instead of a timeout each
        self._down_until = 0.0

    def _failed(self, op: str, e: BaseException) -> None:
        self._errors += 1
        now = asyncio.get_running_loop().time()
        self._down_until = now + DOWN_FOR
        if now - self._last_error_log > 10:
            self._last_error_log = now
            log.warning("cache redis %s failed: %r (skipping Redis for %.0fs)", op, e, DOWN_FOR)

    def _down(self) -> bool:
        return self._down_until > 0 and asyncio.get_running_loop().time() < self._down_until

    async def get(self, key: str) -> Stored | None:
        if self._down():
            return None
        try:
            data: Any = await self.client.get(self.prefix + key)
        except self.failures as e:
            self._failed("get", e)
            return None
        if not isinstance(data, bytes):
            return None
        return decode(data)

    async def put(self, key: str, obj: Stored, ttl: float) -> bool:
        ms = int(ttl * 1000)
        if ms <= 0:
            return False
        if self._down():
            return False
        data = encode(obj)
        if self.max_object is not None and len(data) > self.max_object + 65536:
            return False
        try:
            await self.client.set(self.prefix + key, data, px=ms)
        except self.failures as e:
            self._failed("set", e)
            return False
        return True

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        try:
            n: Any = await self.client.delete(*(self.prefix + k for k in keys))
        except self.failures as e:
            self._failed("delete", e)
            return 0
        return int(n)

    async def delete_prefix(self, prefix: str) -> int:
        pattern = glob_escape(self.prefix + prefix) + "*"
        total = 0
        batch: list[Any] = []
        try:
            async for k in self.client.scan_iter(match=pattern, count=500):
                batch.append(k)
                if len(batch) >= 500:
                    total += int(await self.client.delete(*batch))
                    batch = []
            if batch:
                total += int(await self.client.delete(*batch))
        except self.failures as e:
            self._failed("delete_prefix", e)
        return total

    async def clear(self) -> int:
        return await self.delete_prefix("")

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        with contextlib.suppress(*self.failures):
            await self.client.aclose()

    def stats(self) -> dict[str, int]:
        return {"redis_errors": self._errors}

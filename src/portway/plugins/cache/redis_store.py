"""Redis store: shares cached responses between gateway instances."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any, Final

from portway.plugins.cache.entry import Stored, decode, encode
from portway.plugins.cache.store import VERSION_TTL, Guard
from portway.state.redis import redis_failures

if TYPE_CHECKING:
    # imported when a store is built: a gateway without a Redis cache never loads redis-py
    import redis.asyncio as aioredis

log = logging.getLogger("portway.cache")

_GLOB = re.compile(r"([*?\[\]\\])")


def glob_escape(s: str) -> str:
    return _GLOB.sub(r"\\\1", s)


DOWN_FOR = 1.0

#: the object and its key's invalidation version in one round trip
_LOOKUP: Final = """
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""
#: KEYS: object, version of the guarding key; ARGV: data, px, expected version
_PUT_GUARDED: Final = """
local v = redis.call('GET', KEYS[2]) or ''
if v ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
#: KEYS: n objects then their n version keys; ARGV: new version, its px
_INVALIDATE: Final = """
local n = 0
local half = #KEYS / 2
for i = 1, half do
  n = n + redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[half + i], ARGV[1], 'PX', ARGV[2])
end
return n
"""
_VERSION_PX: Final = int(VERSION_TTL * 1000)
#: put outcomes (the tiered store tells a refusal from an outage)
STORED: Final = "stored"
REFUSED: Final = "refused"
FAILED: Final = "failed"


class RedisStore:
    """Objects live at ``prefix + key`` with a Redis TTL (``PX``), encoded by
    :func:`~portway.plugins.cache.entry.encode`; a key's invalidation version lives at
    ``prefix + "v:" + key`` (both with the hash tag described below). Guarded puts and
    invalidations are Lua scripts, so a version check and the write it allows are one atomic
    step. Backend errors count as misses.

    On Redis Cluster every key carries the hash tag of its primary cache key (``{route/…}``):
    an object, its Vary variants and the primary's invalidation version share one slot, so
    the guarded put and the lookup (scripts over both) never cross slots."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        timeout: float = 0.5,
        max_object: int | None = None,
        client: aioredis.Redis | None = None,
    ) -> None:
        from redis.exceptions import NoScriptError

        from portway.state.connect import redis_client

        self._no_script = NoScriptError
        #: what a backend failure raises (counted as a miss)
        self.failures = redis_failures()
        self.prefix = prefix
        self.max_object = max_object
        self.client: aioredis.Redis = client or redis_client(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._errors = 0
        self._guard_refused = 0
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
            data: Any = await self.client.get(self._okey(key))
        except self.failures as e:
            self._failed("get", e)
            return None
        if not isinstance(data, bytes):
            return None
        return decode(data)

    def _okey(self, key: str) -> str:
        """The Redis key of cache key ``key`` (a primary, or ``primary#gen#hash`` variant)."""
        primary, sep, rest = key.partition("#")
        return f"{self.prefix}{{{primary}}}{sep}{rest}"

    def _vkey(self, key: str) -> str:
        primary, sep, rest = key.partition("#")
        return f"{self.prefix}v:{{{primary}}}{sep}{rest}"

    async def _script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        sha = _sha(source)
        try:
            return await self.client.evalsha(sha, len(keys), *keys, *args)
        except self._no_script:
            # a restarted server lost its script cache: EVAL runs and caches it in one trip
            return await self.client.eval(source, len(keys), *keys, *args)

    async def lookup(self, key: str) -> tuple[Stored | None, str | None]:
        if self._down():
            return None, ""
        try:
            data, ver = await self._script(_LOOKUP, [self._okey(key), self._vkey(key)], [])
        except self.failures as e:
            self._failed("lookup", e)
            return None, ""
        obj = decode(data) if isinstance(data, bytes) else None
        return obj, ver.decode() if isinstance(ver, bytes) else ""

    async def version(self, key: str) -> str:
        if self._down():
            return ""
        try:
            ver: Any = await self.client.get(self._vkey(key))
        except self.failures as e:
            self._failed("version", e)
            return ""
        return ver.decode() if isinstance(ver, bytes) else ""

    async def put(self, key: str, obj: Stored, ttl: float, guard: Guard | None = None) -> bool:
        return await self.put_outcome(key, obj, ttl, guard) == STORED

    async def put_outcome(
        self, key: str, obj: Stored, ttl: float, guard: Guard | None = None
    ) -> str:
        """:data:`STORED`, :data:`REFUSED` (too large, or the guard's version is stale) or
        :data:`FAILED` (Redis unavailable)."""
        ms = int(ttl * 1000)
        if ms <= 0:
            return REFUSED
        if self._down():
            return FAILED
        data = encode(obj)
        if self.max_object is not None and len(data) > self.max_object + 65536:
            return REFUSED
        try:
            if guard is None:
                await self.client.set(self._okey(key), data, px=ms)
                return STORED
            done = await self._script(
                _PUT_GUARDED,
                [self._okey(key), self._vkey(guard.key)],
                [data, ms, guard.version],
            )
        except self.failures as e:
            self._failed("set", e)
            return FAILED
        if int(done) == 1:
            return STORED
        self._guard_refused += 1
        return REFUSED

    async def invalidate(self, *keys: str) -> int:
        if not keys:
            return 0
        version = secrets.token_hex(8)
        try:
            # one script per key: different keys live in different Cluster slots
            done = await asyncio.gather(
                *(
                    self._script(
                        _INVALIDATE, [self._okey(k), self._vkey(k)], [version, _VERSION_PX]
                    )
                    for k in keys
                )
            )
        except self.failures as e:
            self._failed("invalidate", e)
            return 0
        return sum(int(n) for n in done)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        try:
            n: Any = await self.client.delete(*(self._okey(k) for k in keys))
        except self.failures as e:
            self._failed("delete", e)
            return 0
        return int(n)

    async def delete_prefix(self, prefix: str) -> int:
        # objects are stored as ``prefix{primary}#…`` (see :meth:`_okey`): a prefix that
        # reaches into the variant part names its whole primary
        if "#" in prefix:
            primary, _, rest = prefix.partition("#")
            head = f"{{{primary}}}#{rest}"
        else:
            head = "{" + prefix if prefix else ""
        pattern = glob_escape(self.prefix + head) + "*"
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
        return {"redis_errors": self._errors, "redis_guard_refused": self._guard_refused}


def _sha(source: str) -> str:
    sha = _SHAS.get(source)
    if sha is None:
        sha = _SHAS[source] = hashlib.sha1(source.encode()).hexdigest()
    return sha


_SHAS: dict[str, str] = {}

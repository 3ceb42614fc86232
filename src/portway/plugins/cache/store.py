"""The storage seam of the cache: a byte-bounded memory LRU, Redis, or both tiered.

Stores never raise on backend trouble: a failing backend answers as a miss (``None``/``False``/
``0``) and counts the error in :meth:`CacheStore.stats`, because a cache outage must degrade to
pass-through rather than fail requests.

Ordering of stores and invalidations (RFC 9111 §4.4). A response is stored some time after
its request went upstream, so an unsafe request that invalidated the URL in between must win:
every primary key has an *invalidation version* (absent until the key is first invalidated;
a fresh random token per invalidation, kept :data:`VERSION_TTL` seconds). A request reads the
version with its lookup (:meth:`CacheStore.lookup`) and stores with a :class:`Guard`
carrying it; the store refuses the write when the version changed meanwhile, atomically with
the write (a Lua script on Redis, one event-loop step in memory). Because a version expires,
the plugin never stores under a guard older than :data:`GUARD_MAX_AGE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from portway.plugins.cache.entry import Stored

#: seconds an invalidation version is kept after the invalidation
VERSION_TTL: Final = 600.0
#: a guard read longer ago than this is too old to prove anything: the store is skipped
#: (the margin covers clock granularity between the gateway and Redis)
GUARD_MAX_AGE: Final = VERSION_TTL - 30.0


@dataclass(frozen=True, slots=True)
class Guard:
    """Store only if ``key``'s invalidation version is still ``version`` ("" = never
    invalidated, or invalidated more than :data:`VERSION_TTL` seconds ago)."""

    key: str
    version: str


class CacheStore(Protocol):
    """Key → :data:`~portway.plugins.cache.entry.Stored` with per-object TTLs."""

    async def get(self, key: str) -> Stored | None: ...

    async def lookup(self, key: str) -> tuple[Stored | None, str | None]:
        """The object at ``key`` and the key's invalidation version, read together; the
        version is ``None`` when this store could answer without reading it (ask
        :meth:`version` before going upstream)."""
        ...

    async def version(self, key: str) -> str:
        """``key``'s current invalidation version ("" when none)."""
        ...

    async def put(self, key: str, obj: Stored, ttl: float, guard: Guard | None = None) -> bool:
        """Store ``obj`` for ``ttl`` seconds; ``False`` when it was refused (too large, error,
        or ``guard``'s version is no longer current)."""
        ...

    async def invalidate(self, *keys: str) -> int:
        """Delete ``keys`` and give each a new invalidation version, so that stores guarded by
        an older version are refused; returns how many objects went."""
        ...

    async def delete(self, *keys: str) -> int: ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; returns how many went."""
        ...

    async def clear(self) -> int: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def stats(self) -> dict[str, int]: ...

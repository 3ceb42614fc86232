"""The storage seam of the cache: a byte-bounded memory LRU, Redis, or both tiered.

Stores never raise on backend trouble: a failing backend answers as a miss (``None``/``False``/
``0``) and counts the error in :meth:`CacheStore.stats`, because a cache outage must degrade to
pass-through rather than fail requests.
"""

from __future__ import annotations

from typing import Protocol

from portway.plugins.cache.entry import Stored


class CacheStore(Protocol):
    """Key → :data:`~portway.plugins.cache.entry.Stored` with per-object TTLs."""

    async def get(self, key: str) -> Stored | None: ...

    async def put(self, key: str, obj: Stored, ttl: float) -> bool:
        """Store ``obj`` for ``ttl`` seconds; ``False`` when it was refused (too large, error)."""
        ...

    async def delete(self, *keys: str) -> int: ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; returns how many went."""
        ...

    async def clear(self) -> int: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def stats(self) -> dict[str, int]: ...

"""The StateStore protocol: the one seam for state shared between requests, workers and nodes.

Backends: ``memory`` (default, no dependencies, one process) and ``redis`` (redis-py asyncio,
atomic Lua scripts, keys under a prefix with Redis Cluster hash tags). Feature modules (rate
limiting, cache, config notices) build on the primitives below rather than on a backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class StoreUnavailableError(Exception):
    """The backend could not be reached; callers apply their ``on_store_error`` policy."""


class StateStore(Protocol):
    """Minimal key/value + pub/sub surface shared by all backends."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    async def delete(self, *keys: str) -> int: ...

    async def publish(self, channel: str, message: bytes) -> None: ...

    def subscribe(self, channel: str) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...

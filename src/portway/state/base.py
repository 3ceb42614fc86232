"""The StateStore protocol: the one seam for state shared between requests, workers and nodes.

Backends: ``memory`` (default, no dependencies, one process) and ``redis`` (redis-py asyncio,
atomic Lua scripts, keys under a prefix with Redis Cluster hash tags). Feature modules (rate
limiting, cache, config notices) build on the primitives below rather than on a backend.

Every backend method may raise :class:`StoreUnavailableError` and nothing else for backend
trouble (connection refused, timeout, a backend that is backing off after failures); callers
turn that into their ``on_store_error`` policy.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class StoreUnavailableError(Exception):
    """The backend could not be reached; callers apply their ``on_store_error`` policy."""


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A server-side script, identified by the SHA-1 of its source (what EVALSHA takes)."""

    source: str
    sha: str = field(default="")

    def __post_init__(self) -> None:
        if not self.sha:
            object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


ScriptArg = str | int | float | bytes


class StateStore(Protocol):
    """Minimal key/value + pub/sub surface shared by all backends.

    Keys are used verbatim (callers add their own prefix and hash tags); ``ttl`` is seconds.
    """

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    async def delete(self, *keys: str) -> int: ...

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to an integer counter (created at 0) and return the new value; a
        ``ttl`` is applied only when the key is created."""
        ...

    async def publish(self, channel: str, message: bytes) -> None: ...

    def subscribe(self, channel: str) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ScriptingStore(Protocol):
    """A store that runs atomic Lua scripts server-side (the Redis backend)."""

    async def eval_script(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[ScriptArg]
    ) -> Any:
        """Run ``script`` atomically: EVALSHA, falling back to EVAL (which also caches the
        script) when the server answers NOSCRIPT."""
        ...


@runtime_checkable
class PackedScriptingStore(ScriptingStore, Protocol):
    """A scripting store that also takes a call's parameters pre-encoded (the Redis store on
    one plain server: ``state/resp.py``), so a caller renders its constant part once."""

    @property
    def packs(self) -> bool:
        """True when :meth:`eval_packed` may be used (False: use ``eval_script``)."""
        ...

    def eval_packed(self, script: LuaScript, nparams: int, params: bytes) -> Awaitable[Any]:
        """``eval_script`` with ``numkeys, keys..., args...`` as ``nparams`` RESP bulk strings
        in ``params``; the returned awaitable is the reply's future."""
        ...

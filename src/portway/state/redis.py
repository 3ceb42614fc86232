"""Redis state store: redis-py asyncio with short timeouts and a failure backoff.

Availability contract: a request must never pay seconds of latency because Redis is down.
Each command has a short socket/connect timeout, redis-py's own retries are disabled, and
after a failure the store *backs off*: for ``backoff_min`` seconds (doubling per consecutive
failed probe up to ``backoff_max``) every call fails immediately with
:class:`StoreUnavailableError` without touching the network. When the backoff expires exactly
one caller probes Redis; its success closes the breaker and normal operation resumes without
a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from portway.state.base import LuaScript, ScriptArg, StoreUnavailableError
from portway.state.batch import ScriptBatcher
from portway.state.connect import drop_connections
from portway.state.resp import Backoff, ReplyWaiter, ScriptPipe

__all__ = ["Backoff", "RedisStore", "redis_failures"]

if TYPE_CHECKING:
    # redis-py is imported when a store is first built (~8 MB of a worker's memory that a
    # gateway without Redis never needs)
    import redis.asyncio as aioredis

T = TypeVar("T")


def redis_failures() -> tuple[type[BaseException], ...]:
    """What a call to Redis raises when the server is down, slow or gone (imports redis-py:
    call it when a client is built, not at import)."""
    from redis.exceptions import RedisClusterException, RedisError

    # the Cluster client's own failures ("no reachable node", "slot not covered") do not
    # derive from RedisError
    return (RedisError, RedisClusterException, OSError, TimeoutError)


class RedisStore:
    """A :class:`~portway.state.base.StateStore` and ``ScriptingStore`` on Redis.

    No I/O happens in the constructor (connections are opened on first use), so building one
    per runtime graph is free. Every backend failure surfaces as
    :class:`StoreUnavailableError`.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 0.25,
        timeout: float = 0.25,
        backoff_min: float = 0.5,
        backoff_max: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        raw_pipe: bool = True,
    ) -> None:
        """``raw_pipe=False`` keeps script calls on redis-py (for comparisons)."""
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._errors = redis_failures()
        self.url = url
        from portway.state.connect import redis_client

        # a plain, Cluster or Sentinel client (state/connect.py): the same commands on each
        self._client: aioredis.Redis = redis_client(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            # redis-py retries by default; each retry would add a timeout's worth of latency
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._backoff = Backoff(backoff_min, backoff_max)
        self._clock = clock
        # script calls (every rate-limit decision) go over one raw pipelined connection when
        # the URL names one plain server (state/resp.py); TLS, Cluster and Sentinel batch
        # them through redis-py (state/batch.py)
        self._pipe = (
            None
            if not raw_pipe
            else _script_pipe(
                url,
                connect_timeout=connect_timeout,
                timeout=timeout,
                describe=self._safe_url,
                on_failure=self._pipe_failed,
                on_success=self._backoff.success,
                backoff=self._backoff,
                clock=clock,
            )
        )
        self._batcher: ScriptBatcher | ScriptPipe = self._pipe or ScriptBatcher(
            self._client,
            self._errors,
            describe=self._safe_url,
            on_failure=self._failed,
            on_success=self._backoff.success,
        )

    @property
    def batcher(self) -> ScriptBatcher | ScriptPipe:
        """Sends the script calls of concurrent requests in one round trip; its
        ``round_trips`` and ``calls`` count what was sent."""
        return self._batcher

    @property
    def packs(self) -> bool:
        """True when :meth:`eval_packed` takes pre-encoded parameters (one plain server)."""
        return self._pipe is not None

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    @property
    def available(self) -> bool:
        """False while backing off after a failure."""
        return not self._backoff.is_open

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        if not self._backoff.allow(self._clock()):
            raise StoreUnavailableError(f"redis at {self._safe_url()} unavailable (backing off)")
        try:
            result = await fn()
        except self._errors as e:
            with contextlib.suppress(*self._errors):
                await self._failed(e)
            raise StoreUnavailableError(f"redis at {self._safe_url()}: {e}") from e
        self._backoff.success()
        return result

    async def _failed(self, exc: BaseException) -> None:
        if self._backoff.failure(self._clock()):
            # pooled sockets to a restarted server are all dead; drop them so the probe
            # after the backoff opens a fresh connection instead of failing on a stale one
            # (a Cluster client has one pool per node: drop_connections knows each kind)
            await drop_connections(self._client)

    def _pipe_failed(self, exc: BaseException) -> None:
        if self._backoff.failure(self._clock()):
            # redis-py's pooled sockets (get/set/publish) are as dead as the pipe's
            asyncio.get_running_loop().create_task(self._drop_pool())

    async def _drop_pool(self) -> None:
        with contextlib.suppress(*self._errors):
            await drop_connections(self._client)

    def _safe_url(self) -> str:
        # never put a password from the URL into logs or error messages
        _head, sep, tail = self.url.rpartition("@")
        return f"redis://***@{tail}" if sep else self.url

    async def eval_script(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[ScriptArg]
    ) -> Any:
        # batched with the concurrent calls of other requests (one pipeline per round trip);
        # the batcher reports each round trip's outcome to the backoff
        if not self._backoff.allow(self._clock()):
            raise StoreUnavailableError(f"redis at {self._safe_url()} unavailable (backing off)")
        return await self._batcher.submit(script, keys, args)

    def eval_packed(self, script: LuaScript, nparams: int, params: bytes) -> Awaitable[Any]:
        """:meth:`eval_script` with the parameters pre-encoded (``numkeys, keys..., args...``
        as RESP bulk strings: :func:`portway.state.resp.bulk`); only when :attr:`packs`.
        Returns the reply's future itself: awaiting it is the caller's one suspension."""
        pipe = self._pipe
        assert pipe is not None, "eval_packed needs a plain-server store (see packs)"
        if not self._backoff.allow(self._clock()):
            raise StoreUnavailableError(f"redis at {self._safe_url()} unavailable (backing off)")
        return pipe.submit_packed(script, nparams, params)

    def eval_packed_to(
        self, script: LuaScript, nparams: int, params: bytes, waiter: ReplyWaiter
    ) -> None:
        """:meth:`eval_packed` telling ``waiter`` (``resolved(reply)`` / ``failed(exc)``, from
        the connection's callbacks: no future, see ``ScriptPipe.submit_to``); raises
        :class:`StoreUnavailableError` at once while backing off. Only when :attr:`packs`."""
        pipe = self._pipe
        assert pipe is not None, "eval_packed_to needs a plain-server store (see packs)"
        pipe.submit_to(script, nparams, params, waiter)  # (it asks the backoff first)

    @property
    def pipe(self) -> ScriptPipe | None:
        """The raw pipelined connection (one plain server), else None: its ``submit_to`` is
        :meth:`eval_packed_to` (the compiled rate-limit decision calls it directly)."""
        return self._pipe

    async def get(self, key: str) -> bytes | None:
        async def run() -> bytes | None:
            v = await self._client.get(key)
            if v is None:
                return None
            return v.encode() if isinstance(v, str) else bytes(v)

        return await self._call(run)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        px = max(1, int(ttl * 1000)) if ttl is not None else None

        async def run() -> None:
            await self._client.set(key, value, px=px)

        await self._call(run)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0

        async def run() -> int:
            return int(await self._client.delete(*keys))

        return await self._call(run)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        return int(await self.eval_script(_INCR, [key], [amount, _ms(ttl)]))

    async def publish(self, channel: str, message: bytes) -> None:
        async def run() -> None:
            await self._client.publish(channel, message)

        await self._call(run)

    async def subscribe(self, channel: str) -> AsyncIterator[bytes]:
        pubsub = self._client.pubsub()
        try:
            await self._call(lambda: pubsub.subscribe(channel))
            while True:
                msg = await self._call(
                    lambda: pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                )
                if msg is not None and msg.get("type") == "message":
                    yield bytes(msg["data"])
        finally:
            # typed in newer redis-py, untyped in older: call through Any for both
            await cast(Any, pubsub).aclose()

    async def ping(self) -> bool:
        async def run() -> bool:
            return bool(await self._client.ping())

        return await self._call(run)

    async def aclose(self) -> None:
        if self._pipe is not None:
            await self._pipe.aclose()
        await self._client.aclose()


def _script_pipe(url: str, **kwargs: Any) -> ScriptPipe | None:
    """The raw pipelined connection for ``url`` when it names one plain server, else None."""
    from portway.state.connect import parse_redis_url

    scheme = url.partition("://")[0].lower()
    if scheme not in ("redis", "unix") or parse_redis_url(url).kind != "single":
        return None
    from redis.asyncio.connection import parse_url

    p = parse_url(url)
    return ScriptPipe(
        host=str(p.get("host") or "127.0.0.1"),
        port=int(p.get("port") or 6379),
        path=p.get("path"),
        db=int(p.get("db") or 0),
        username=p.get("username"),
        password=p.get("password"),
        **kwargs,
    )


def _ms(ttl: float | None) -> int:
    return max(1, int(ttl * 1000)) if ttl is not None else 0


_INCR = LuaScript(
    """
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and v == tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return v
"""
)

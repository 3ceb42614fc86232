"""The ``concurrency_limit`` plugin: at most ``max`` requests in flight per key.

A slot is taken in ``on_request`` and given back in ``on_log``, which the runtime runs exactly
once per request, including errors and client disconnects; so a slot can leak only if the
process dies. ``local`` counts in-process (exact per process, ``max / instances`` each);
``redis`` holds one lease per request in a sorted set scored by expiry (Redis clock), so the
leases of a crashed gateway vanish after ``lease_ttl``. With Redis down, ``on_store_error:
allow`` limits locally at ``max / instances`` and ``deny`` answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

from portway.errors import GatewayError, TooManyRequestsError, UnavailableError
from portway.http.models import Response
from portway.pipeline.context import ContextKey, RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins._ratelimit.keys import compile_key
from portway.plugins._ratelimit.limiter import hash_tag
from portway.plugins._ratelimit.lua import ACQUIRE, RELEASE
from portway.plugins._ratelimit.stores import key_prefix, shared_redis
from portway.plugins.concurrency_limit.config import ConcurrencyLimitConfig
from portway.state.base import StoreUnavailableError
from portway.state.redis import RedisStore

log = logging.getLogger("portway.plugins.concurrency_limit")


class LocalConcurrency:
    """In-flight counters per key; exact within one process."""

    __slots__ = ("_counts", "max")

    def __init__(self, max_in_flight: int) -> None:
        self.max = max_in_flight
        self._counts: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        n = self._counts.get(key, 0)
        if n >= self.max:
            return False
        self._counts[key] = n + 1
        return True

    def release(self, key: str) -> None:
        n = self._counts.get(key, 0) - 1
        if n > 0:
            self._counts[key] = n
        else:
            # drop zero entries so idle keys do not accumulate
            self._counts.pop(key, None)

    def in_flight(self, key: str) -> int:
        return self._counts.get(key, 0)

    def __len__(self) -> int:
        return len(self._counts)


@dataclass(slots=True)
class _Lease:
    key: str
    #: None for a local slot, else the lease id in the Redis sorted set ``key``
    lease_id: str | None


class ConcurrencyLimitPlugin(Plugin[ConcurrencyLimitConfig]):
    """Caps concurrent requests per key; see the module docstring for the contract."""

    name = "concurrency_limit"
    stage = Stage.traffic
    Config = ConcurrencyLimitConfig

    def __init__(self, config: ConcurrencyLimitConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        c = config
        self._key = compile_key(c.key)
        self._scope = env.route or "*"
        local_max = max(1, c.max // c.instances)
        ident = f"concurrency_limit.local|{self._scope}|{c.key}|{local_max}"
        self.local: LocalConcurrency = env.shared(ident, lambda: LocalConcurrency(local_max))
        self.store: RedisStore | None = None
        self._prefix = ""
        if c.store == "redis":
            self.store = shared_redis(env, c.redis)
            self._prefix = key_prefix(env, c.redis, "cc:")
        self._ttl_ms = str(max(1, int(c.lease_ttl * 1000)))
        self._max = str(c.max)
        self._deny = c.on_store_error == "deny"
        # per binding, so two bindings on one route keep separate leases
        self._lease: ContextKey[_Lease] = ContextKey(f"concurrency_limit.lease.{id(self):x}")
        self._releases: set[asyncio.Future[Any]] = set()
        # the local counter acquires without awaiting (and releases in on_log): such routes
        # may take the task-free path
        self.sync_hooks = self.store is None

    def _reject(self) -> GatewayError:
        headers = [("retry-after", "1")]
        msg = "too many concurrent requests"
        if self.config.status == 503:
            return UnavailableError(
                msg, code="concurrency_limited", headers=headers, source=self.name
            )
        return TooManyRequestsError(
            msg, code="concurrency_limited", headers=headers, source=self.name
        )

    async def on_request(self, ctx: RequestContext) -> Response | None:
        key = self._key(ctx)
        if self.store is not None:
            rkey = f"{self._prefix}{{{hash_tag(self._scope, key)}}}:cc"
            lease_id = os.urandom(9).hex()
            try:
                reply = await self.store.eval_script(
                    ACQUIRE, [rkey], [self._max, lease_id, self._ttl_ms]
                )
            except StoreUnavailableError as e:
                if self._deny:
                    raise UnavailableError(
                        "concurrency limit store unavailable",
                        headers=[("retry-after", "1")],
                        source=self.name,
                    ) from e
            else:
                if int(reply[0]) != 1:
                    raise self._reject()
                ctx.state[self._lease] = _Lease(rkey, lease_id)
                return None
        if not self.local.acquire(key):
            raise self._reject()
        ctx.state[self._lease] = _Lease(key, None)
        return None

    def on_log(self, ctx: RequestContext) -> None:
        lease = ctx.state.pop(self._lease)
        if lease is None:
            return
        if lease.lease_id is None:
            self.local.release(lease.key)
            return
        assert self.store is not None
        if not self.store.available:
            return  # backing off: the lease expires after lease_ttl
        try:
            # queued on the store's batch (no task per request): it shares the round trip of
            # the other requests' decisions
            fut = self.store.batcher.submit(RELEASE, [lease.key], [lease.lease_id])
        except RuntimeError:
            return  # no loop (shutdown): the lease expires after lease_ttl
        self._releases.add(fut)
        fut.add_done_callback(self._released)

    def _released(self, fut: asyncio.Future[Any]) -> None:
        self._releases.discard(fut)
        if not fut.cancelled() and (e := fut.exception()) is not None:
            log.debug("concurrency_limit: release failed (%s); lease expires by ttl", e)

    async def aclose(self) -> None:
        if self._releases:
            await asyncio.wait(set(self._releases), timeout=2.0)

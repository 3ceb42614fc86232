"""Background revalidation for stale-while-revalidate (RFC 5861 §3).

One refresh per key at a time; it goes through ``env.forward`` (the same upstream path as a
request), and its store is guarded like a request's (``store.py``), so an invalidation that
happens while it is in flight wins over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from portway.http.models import Request, Response
from portway.pipeline.context import RequestContext
from portway.plugins.cache.entry import CacheEntry, VaryIndex
from portway.plugins.cache.policy import (
    CONDITIONAL_FIELDS,
    storable,
    stored_headers,
    validator_matches,
    validators,
)
from portway.plugins.cache.state import Flight
from portway.plugins.cache.store import Guard

if TYPE_CHECKING:
    from portway.plugins.cache.plugin import CachePlugin

log = logging.getLogger("portway.cache")

Forward = Callable[[RequestContext, Request], Awaitable[Response]]


class Refresher:
    """The background refreshes of one :class:`CachePlugin` (cancelled by :meth:`aclose`)."""

    def __init__(self, plugin: CachePlugin) -> None:
        self._p = plugin
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, ctx: RequestContext, flight: Flight) -> bool:
        """Start one background revalidation for the key; ``False`` when that is impossible
        (no ``env.forward``), in which case the caller validates in the foreground."""
        forward: Forward | None = getattr(self._p.env, "forward", None)
        if forward is None or flight.entry is None:
            return False
        if flight.key in self._refreshing:
            return True
        self._refreshing.add(flight.key)
        entry = flight.entry
        req = ctx.upstream_request.copy_for_upstream()
        req.method, req.body, req.content_length = "GET", None, None
        req.headers.remove_many(CONDITIONAL_FIELDS)
        for name, value in validators(entry):
            req.headers.add(name, value)
        client_pairs = list(ctx.request.headers.raw())
        guard = self._p.guard(flight)
        task = asyncio.create_task(
            self._run(forward, ctx, req, flight.key, flight.index, entry, client_pairs, guard)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(
        self,
        forward: Forward,
        ctx: RequestContext,
        req: Request,
        key: str,
        index: VaryIndex | None,
        entry: CacheEntry,
        client_pairs: list[tuple[bytes, bytes]],
        guard: Guard | None,
    ) -> None:
        p = self._p
        p.counters.background_refresh += 1
        try:
            if guard is None:
                guard = Guard(key, await p.store.version(key))
            request_time = p.clock()
            resp = await forward(ctx, req)
            body = resp.body if isinstance(resp.body, bytes) else await resp.body.read_all()
            rpairs = resp.headers.raw()
            if resp.status == 304 and validator_matches(entry, rpairs):
                merged = p.merged(entry, rpairs, 0.0)
                await p.store_guarded(key, index, client_pairs, merged, guard)
                return
            ok, _ = storable(
                "GET",
                resp.status,
                rpairs,
                client_pairs,
                store_set_cookie=p.config.store_set_cookie,
                targets=p.targets,
            )
            if ok and len(body) <= p.config.max_object:
                now = p.clock()
                fresh = CacheEntry(
                    status=resp.status,
                    headers=stored_headers(rpairs, response_time=now, targets=p.targets),
                    body=body,
                    request_time=request_time,
                    response_time=now,
                    expires_at=0.0,
                )
                await p.store_guarded(key, index, client_pairs, fresh, guard)
        except Exception as e:
            p.counters.refresh_failed += 1
            log.debug("cache background refresh of %s failed: %r", key, e)
        finally:
            self._refreshing.discard(key)

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The refreshes under way."""
        return list(self._tasks)

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t

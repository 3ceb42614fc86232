"""Request mirroring (shadowing): a copy of a route's requests to a shadow upstream.

The copy (method, path, the forwarded header fields, the body when it was held within
``max_body_bytes``) is sent once the client request has been read, by a task of its own
through the shadow upstream's balancer, breaker, pool and timeouts (the ordinary
:class:`~portway.proxy.forward.Forwarder`). Its answer is read and discarded; nothing about
it — status, slowness, a reset, a hang — reaches the client's exchange: the client's
request never awaits the copy.

Sampling is deterministic: the n-th request of the route is copied when
``floor(n * sample)`` moved, so over N requests exactly ``floor(N * sample)`` are sampled.
At most ``max_in_flight`` copies run at once; a sampled request beyond that, or whose body
was not held, is dropped and counted (``portway_mirror_dropped_total``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Final

from portway.http.body import BodyStream
from portway.http.models import Request
from portway.observability.counters import LazyCounter
from portway.pipeline.context import RequestContext
from portway.proxy.forward import Forwarder

if TYPE_CHECKING:
    from portway.routing.router import RouteMatch
    from portway.runtime.graph import RouteRuntime, RuntimeGraph

log: Final = logging.getLogger("portway.proxy")

MIRRORED: Final = LazyCounter(
    "portway_mirror_requests",
    "Mirrored copies completed, by outcome (status class of the shadow's answer, or error)",
    ["route", "upstream", "result"],
)
DROPPED: Final = LazyCounter(
    "portway_mirror_dropped",
    "Sampled copies not sent: max_in_flight reached, or body not held (too large/streamed)",
    ["route", "upstream", "reason"],
)


class Mirror:
    """One route's mirror (per runtime graph). ``submit`` never blocks and never raises."""

    def __init__(
        self, route: str, rt: RouteRuntime, sample: float, max_in_flight: int, max_body: int
    ) -> None:
        self.route = route
        self.rt = rt
        assert rt.upstream is not None
        self.upstream = rt.upstream.name
        self.sample = sample
        self.max_in_flight = max_in_flight
        self.max_body = max_body
        self.seen = 0
        self.sent = 0
        self.dropped = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def sampled(self) -> bool:
        """Counter-based sampling: exact over any number of requests."""
        n = self.seen = self.seen + 1
        return math.floor(n * self.sample) > math.floor((n - 1) * self.sample)

    def submit(self, ctx: RequestContext, graph: RuntimeGraph, body: bytes | None) -> None:
        """Copy ``ctx.upstream_request`` (prepared, not yet sent) with ``body`` (``None``:
        the request has a body that was not held)."""
        try:
            if not self.sampled():
                return
            if body is None:
                self._drop("body_not_held")
                return
            if len(self.tasks) >= self.max_in_flight:
                self._drop("max_in_flight")
                return
            ureq = ctx.upstream_request
            copy = ureq.copy_for_upstream()
            copy.body = BodyStream.of(body) if ureq.body is not None else None
            copy.expect_continue = False
            task = asyncio.get_running_loop().create_task(self._run(graph, copy, ctx.match))
            self.sent += 1
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        except Exception:
            log.exception("mirror of route %s failed to start", self.route)

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        DROPPED.labels(self.route, self.upstream, reason).inc()

    async def _run(self, graph: RuntimeGraph, req: Request, match: RouteMatch | None) -> None:
        ctx = RequestContext(req, copy=False)
        ctx.match = match
        result = "error"
        ok = False
        try:
            async with asyncio.timeout(self.rt.total_timeout):
                resp = await Forwarder(graph).forward(ctx, self.rt, None)
                body = resp.body
                if isinstance(body, BodyStream):
                    await body.drain()
                ok = True
                result = f"{resp.status // 100}xx"
        except asyncio.CancelledError:
            result = "cancelled"
            raise
        except Exception as e:  # the shadow's failures are its own: logged at debug only
            log.debug("mirror to %s failed: %r", self.upstream, e)
        finally:
            Forwarder.finish_exchange(ctx, ok=ok)
            MIRRORED.labels(self.route, self.upstream, result).inc()

    async def aclose(self) -> None:
        """Cancel copies still in flight (the graph is being retired)."""
        tasks = list(self.tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

"""One attempt's hold on an upstream connection (httpcore's "the stream owns the connection").

An :class:`Exchange` is made by the forwarder once a response head arrived and lives in
``ctx.exchange`` until the response is relayed (or abandoned). Whoever ends the request
calls :meth:`Exchange.release` — the handler after the body, a retry on status, an error,
the ``finally`` of the request — and only the first call acts: the connection goes back to
its pool exactly once, or is closed/aborted exactly once, and the target's in-flight count
drops exactly once. The upgrade tunnel takes the connection over with :meth:`detach`.
"""

from __future__ import annotations

import asyncio

from portway.http.client import ResponseHead, UpstreamConnection
from portway.http.pool import ConnectionPool
from portway.pipeline.context import Releasable, RequestContext
from portway.upstream.target import Target


class Exchange(Releasable):
    """The upstream side of one attempt: ``conn`` from ``pool`` to ``target``, the request
    body's ``pump`` task (``None`` without a body) and the response ``head``.

    States: *open* (``released`` False) → *released* (by :meth:`release` or :meth:`detach`);
    every later call is a no-op."""

    __slots__ = ("conn", "head", "pool", "pump", "released", "target")

    def __init__(
        self,
        conn: UpstreamConnection,
        pool: ConnectionPool,
        pump: asyncio.Task[None] | None,
        head: ResponseHead,
        target: Target,
    ) -> None:
        self.conn = conn
        self.pool = pool
        self.pump = pump
        self.head = head
        self.target = target
        self.released = False

    def release(self, ok: bool) -> None:
        """End the exchange once: ``ok`` means the response body was read to its end, so a
        keep-alive connection whose request body was all sent goes back to the pool; any
        other connection is closed (``ok``) or aborted."""
        if self.released:
            return
        self.released = True
        self.target.in_flight -= 1
        conn = self.conn
        pump = self.pump
        if pump is not None and (not pump.done() or pump.cancelled() or pump.exception()):
            # the request body was not all sent: the upstream still expects the rest, so
            # the connection can never carry another request
            pump.cancel()
            conn.abort()
            return
        if ok and self.head.keep_alive and conn.reusable:
            self.pool.release(conn)
        elif ok:
            conn.close()
        else:
            conn.abort()

    def detach(self) -> UpstreamConnection:
        """Hand the connection over (the upgrade tunnel): nothing is released here; the new
        owner closes it and calls :meth:`done`."""
        self.released = True
        return self.conn

    def done(self) -> None:
        """The detached connection's owner is finished with the target."""
        self.target.in_flight -= 1


def take_exchange(ctx: RequestContext) -> Exchange | None:
    """Remove and return ``ctx``'s open exchange (``None`` when there is none)."""
    ex = ctx.exchange
    ctx.exchange = None
    if ex is None:
        return None
    assert isinstance(ex, Exchange)
    return ex


def finish_exchange(ctx: RequestContext, ok: bool) -> None:
    """Release ``ctx``'s exchange, if it still has one (see :meth:`Exchange.release`)."""
    ex = ctx.exchange
    if ex is not None:
        ctx.exchange = None
        ex.release(ok)

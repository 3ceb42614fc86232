"""What the two HTTP/2 server engines (``http/h2.py`` on the h2 library, ``http/ng2.py`` on
libnghttp2) keep and do alike per connection: :class:`H2ServerBase`.

The framing, HPACK and flow control differ (and stay in each engine); the connection's
settings from the listener, its idle timer, the end of its streams when the client goes, the
request-body limit and the GOAWAY drain of every live connection do not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from mypy_extensions import mypyc_attr

from portway.errors import PayloadTooLargeError
from portway.http.exceptions import ClientDisconnectedError
from portway.http.flow import WriteFlow
from portway.http.forwarded import TrustedProxies
from portway.http.limits import ServerLimits
from portway.http.models import Request
from portway.http.server import App
from portway.http.streamreq import StreamBody, StreamHead
from portway.http.streamserve import StreamWriter, open_request

log = logging.getLogger("portway.http.h2")


@mypyc_attr(allow_interpreted_subclasses=True)
class H2ServerBase(WriteFlow):
    """One HTTP/2 client connection's engine-independent state.

    Contract for an engine's subclass: it keeps its own ``streams`` (typed with its own
    writer) and calls :meth:`streams_lost` with them from ``connection_lost``; it implements
    :meth:`_engine_setup` (its own state, made at the end of ``__init__``: the constructor's
    arguments are this class's), :meth:`shutdown` (GOAWAY(NO_ERROR), then close: what the
    idle timer calls) and :meth:`begin_drain` (graceful GOAWAY: :func:`drain_live`).
    """

    def __init__(
        self,
        app: App,
        limits: ServerLimits,
        trusted: TrustedProxies,
        scheme: str = "http",
        loop: asyncio.AbstractEventLoop | None = None,
        extra: dict[str, Any] | None = None,
        underscores: bool | None = None,
    ) -> None:
        self.app = app
        #: the listener's ``underscores_in_headers`` (see ``http/owned.py``)
        self.underscores = underscores
        #: the names the gateway sets (asked only for request fields containing ``_``)
        self._owned = app.owned_headers
        self.limits = limits
        self.trusted = trusted
        self.scheme = scheme
        self.loop = loop or asyncio.get_running_loop()
        self.extra: dict[str, Any] = extra or {}
        self.transport = None
        self.peer_ip, self.peer_port = "", 0
        self.server_port = 0
        self.closed = False
        self._can_write = None
        #: a flush is scheduled (``flush_soon``) / ``data_received`` is running
        self._flush_pending = False
        self._receiving = False
        self._idle: asyncio.TimerHandle | None = None
        #: GOAWAY sent for shutdown: open streams complete, new ones are not served
        self.draining = False
        #: ``Alt-Svc`` value of every response head (the listener's HTTP/3 endpoint)
        self.alt_svc: bytes | None = None
        self._engine_setup()

    def streams_lost(self, streams: Iterable[StreamWriter]) -> None:
        """The client went away: the connection is closed, every stream of ``streams`` is
        lost (its handler's task cancelled), a writer waiting on the transport is told and
        the app counts the connection gone. The caller forgets the streams."""
        self.closed = True
        self.transport = None
        self._cancel_idle()
        for s in list(streams):
            s.lost()
        w = self._can_write
        if w is not None and not w.done():
            w.set_exception(ClientDisconnectedError("client disconnected"))
        self.app.connection_closed()

    def open_stream(
        self, w: StreamWriter, head: StreamHead, ended: bool, fields_checked: bool = False
    ) -> Request | None:
        """:func:`open_request` of stream ``w`` with this connection's limits, trusted
        proxies, scheme and addresses: its :class:`Request`, or None (refused, answered)."""
        return open_request(
            w,
            head,
            ended,
            self.limits,
            self.trusted,
            scheme=self.scheme,
            peer=(self.peer_ip, self.peer_port),
            server_port=self.server_port,
            log=log,
            fields_checked=fields_checked,
        )

    def body_over_limit(self, b: StreamBody, n: int) -> bool:
        """``n`` more bytes would take the request body past ``limits.max_body_bytes``: the
        body fails with 413 (the caller returns the bytes' credit) and True."""
        limit = self.limits.max_body_bytes
        if limit is not None and b.received + n > limit:
            b.set_exception(PayloadTooLargeError("request body too large"))
            return True
        return False

    # --- the idle timer ------------------------------------------------------------------------
    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _arm_idle(self) -> None:
        self._cancel_idle()
        secs = self.limits.idle_timeout
        self._idle = self.loop.call_later(secs, self.shutdown) if secs > 0 else None

    # --- the engine's ----------------------------------------------------------------------------
    def _engine_setup(self) -> None:
        """The engine's own state (its streams, its protocol machine)."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Send GOAWAY(NO_ERROR) and close once nothing is in flight (idle or server exit)."""
        raise NotImplementedError

    def begin_drain(self) -> None:
        """Graceful GOAWAY (server shutdown): tell the client the last stream that will be
        served, finish the open streams, refuse new ones, close when the last one ends."""
        raise NotImplementedError


def drain_live(live: Iterable[H2ServerBase], app: App | None) -> int:
    """:meth:`H2ServerBase.begin_drain` on every connection of ``live`` still open (of
    ``app`` when given: tests run several gateways in one process); how many there were."""
    conns = [c for c in live if not c.closed and (app is None or c.app is app)]
    for c in conns:
        c.begin_drain()
    return len(conns)


__all__ = ["H2ServerBase", "drain_live"]

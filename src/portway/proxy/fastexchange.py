"""The task-free exchange itself: :class:`FastExchange` relays one upstream response from
inside the upstream parser's callbacks (``proxy/fast.py`` starts it), and :class:`Resumed`
hands an exchange it cannot finish back to the connection's worker task."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final, cast

from portway.errors import GatewayError, UpstreamError
from portway.http.client import (
    ResponseSink,
    UpstreamConnection,
)
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.http.pool import ConnectionPool
from portway.http.rawhead import SentHead
from portway.http.relay import (
    FRAMING,
    add_response_framing,
    informational_items,
    no_body,
    response_header_items,
    switch_allowed,
    via_value,
)
from portway.http.server import ServerConnection
from portway.http.wire import append_fields, chunk, head_bytes, last_chunk, status_line
from portway.pipeline.context import FALLBACK, FAST, RequestContext
from portway.proxy.fastlines import without_replaced
from portway.proxy.forward import (
    IDEMPOTENT,
    Resume,
    _Attempt,
    after_failure,
    classify_failure,
    retry_on_status,
)

if TYPE_CHECKING:
    from portway.http.serverapi import ClientConnection, FastConn
    from portway.proxy.handler import ProxyApp
    from portway.runtime.graph import RouteRuntime, RuntimeGraph
    from portway.upstream.target import Target
    from portway.upstream.upstream import Upstream


log: Final = logging.getLogger("portway.proxy")

#: no runs of upstream lines (a head relayed field by field); never mutated
_NO_RUNS: Final[list[bytes]] = []
#: no items (``FastExchange.raw_items`` unset); never mutated
_NO_ITEMS: Final[list[tuple[bytes, bytes]]] = []


class FastExchange(ResponseSink):
    """One task-free exchange: the upstream connection's :class:`ResponseSink` and the client
    connection's current exchange. Ends exactly once: ``_end`` (response relayed, or the
    client gone after its head) or ``_fall_back`` (the worker task takes over)."""

    __slots__ = (
        "app",
        "chunked_out",
        "conn",
        "ctx",
        "deadline",
        "done",
        "ended",
        "graph",
        "head_sent",
        "keep",
        "mode",
        "out",
        "pending",
        "raw_fields",
        "raw_items",
        "raw_reason",
        "raw_status",
        "rec_latency",
        "rec_status",
        "rt",
        "t0",
        "target",
        "trailers",
        "uconn",
        "up",
        "up_keep_alive",
    )

    def __init__(
        self,
        app: ProxyApp,
        graph: RuntimeGraph,
        conn: FastConn,
        ctx: RequestContext,
        rt: RouteRuntime,
        up: Upstream,
        target: Target,
        uconn: UpstreamConnection,
        t0: float,
    ) -> None:
        self.paused = False
        # response hooks edit parsed fields; without any, or when they only set fields of
        # their own (``Chain.fields_only``), the head's lines pass whole
        self.raw_head = not rt.chain.on_response or rt.chain.fields_only
        # the head scanner looks for the names the field hooks replace (``RawHead.seen``)
        watch = rt.chain.watch
        head = uconn._head
        if watch is not None:
            if head.watch_names is not watch.names:
                head.watch(watch.names, watch.first)
        elif head.watch_names is not None:
            head.watch(None, b"")
        self.app = app
        self.graph = graph
        self.conn = conn
        self.ctx = ctx
        self.rt = rt
        self.up = up
        self.target = target
        self.uconn = uconn
        #: loop time the exchange started
        self.t0 = t0
        self.deadline = self.t0 + rt.total_timeout
        self.keep = ctx.request.keep_alive
        self.out: list[bytes] = []
        self.mode = ""
        self.head_sent = False
        self.ended = False
        self.done = False
        self.up_keep_alive = False
        self.chunked_out = False
        self.trailers: list[tuple[bytes, bytes]] | None = None
        #: a decision taken inside a parser callback, acted on in ``settle``
        self.pending: Resume | None = None
        #: the response's status and latency, not yet recorded against the target (0: none
        #: pending): recorded after the client write (:meth:`_after_write`)
        self.rec_status = 0
        self.rec_latency = 0.0
        #: a hook-free raw head's response, built after the write (``_after_write``)
        self.raw_fields: list[bytes] | None = None
        self.raw_items: list[tuple[bytes, bytes]] = _NO_ITEMS
        self.raw_status = 0
        self.raw_reason = b""

    # --- ResponseSink (inside the upstream parser) ---------------------------------------------
    def on_info(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        if status == 103 and self.ctx.request.version != "1.0" and not self.head_sent:
            self.out.append(head_bytes(103, reason, informational_items(headers)))

    def on_head(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        chunked: bool,
        content_length: bytes | None,
        special: bool,
        connection: bytes | None,
    ) -> None:
        if not self._admit(status, keep_alive):
            return
        ctx = self.ctx
        req = ctx.request
        via = self.graph.via
        if special:
            items = response_header_items(
                headers, status, via, drop_framing=True, connection=connection
            )
        else:
            # at most a plain Connection field and Content-Length to drop: compared by
            # equality, no set (the names were never hashed)
            items = (
                headers
                if content_length is None and connection is None
                else [kv for kv in headers if kv[0] != b"content-length" and kv[0] != b"connection"]
            )
            if via is not None:
                items.append((b"via", via_value(None, via)))
        # ``ctx.response`` shares ``items``: what observers and on_log see is what was sent
        resp = Response(status, Headers.adopt(items), b"", reason, chunked, upstream=True)
        ctx.response = resp
        if self.rt.chain.on_response:
            try:
                self.rt.chain.run_response_sync(ctx)
            except GatewayError as e:
                self.pending = Resume(attempt=1, error=e, in_response=True)
                return
            status, reason = resp.status, resp.reason
            items = resp.headers.raw()
            if any(k in FRAMING for k, _ in items):
                items[:] = [kv for kv in items if kv[0] not in FRAMING]
        empty = no_body(req.method, status)
        mode, self.keep = add_response_framing(items, req, empty, content_length, self.keep)
        self._emit_head(status, reason, _NO_RUNS, items, mode)

    def _admit(self, status: int, keep_alive: bool) -> bool:
        """Record the response head's arrival; False when it is not to be relayed (a
        decision for ``settle`` is in ``pending``)."""
        ctx = self.ctx
        up = self.up
        target = self.target
        # the upstream connection read the clock as these bytes arrived
        latency = self.uconn.last_io - self.t0
        if status == 101 and not switch_allowed(ctx.request.upgrade, None):
            # RFC 9110 §15.2.2: a switch the client did not ask for cannot be relayed (no
            # upgrade takes this path); both connections end (http/upgrade.py)
            ctx.request.keep_alive = False
            err = UpstreamError("upstream switched protocols unasked", source="upstream")
            self.pending = self._after_failure(_Attempt("reset", True, err), latency)
            return False
        ctx.upstream_latency = latency
        if status < 500:
            # no retry on this status: the outcome (health, breaker, EWMA, retry budget) is
            # recorded after the client write, off the response's critical path; nothing
            # before the write reads it (``_after_write``, at the latest in ``_end``/``_fall_back``)
            self.rec_status = status
            self.rec_latency = latency
        else:
            # the retry decision reads what the record counts (the retry budget)
            up.record(target, False, latency, status, None)
            if retry_on_status(ctx, up, status, 1, self.deadline):
                self.pending = Resume(attempt=1, exclude={target}, delay=up.backoff(1))
                return False
        self.up_keep_alive = keep_alive
        return True

    def _after_write(self) -> None:
        """What the client write did not need, once: the response's outcome recorded
        against the target (see ``_admit``), ``ctx.response`` of a hook-free raw head."""
        fields = self.raw_fields
        if fields is not None:
            self.raw_fields = None
            resp = Response(self.raw_status, None, b"", self.raw_reason, False, True)
            resp.set_raw_fields(fields, self.raw_items)
            self.ctx.response = resp
        status = self.rec_status
        if status:
            self.rec_status = 0
            self.up.record(self.target, True, self.rec_latency, status, None)

    def on_head_raw(
        self,
        status: int,
        reason: bytes,
        fields: list[bytes],
        keep_alive: bool,
        content_length: bytes | None,
    ) -> None:
        if not self._admit(status, keep_alive):
            return
        ctx = self.ctx
        req = ctx.request
        via_line = self.graph.via_line
        chain = self.rt.chain
        if not chain.on_response:
            self._plain_head(status, reason, fields, content_length, req, via_line)
            return
        # (``fields`` is never mutated: it may be the connection's remembered runs)
        scanned = fields
        if via_line:
            fields = [*fields, via_line]
        # the fields the response hooks set (``Chain.fields_only``), then the framing ones:
        # the order the field-by-field path sends them in
        items: list[tuple[bytes, bytes]] = []
        resp = Response(status, None, b"", reason, False, True)
        ctx.response = resp
        # HTTP/1.1: hook fields that repeat come as prerendered lines (``runs``), after the
        # relayed ones (a stream's head is fields: it takes them all as items)
        runs: list[bytes] | None = [] if isinstance(self.conn, ServerConnection) else None
        try:
            reps = chain.run_response_fields(ctx, items, runs)
        except GatewayError as e:
            self.pending = Resume(attempt=1, error=e, in_response=True)
            return
        if reps is not None:
            # the scanner found no line of those names in this head: nothing to drop
            h = self.uconn._head
            watch = chain.watch
            if (
                watch is None
                or h.fields is not scanned
                or h.watch_names is not watch.names
                or h.seen
            ):
                fields = without_replaced(fields, reps, chain.field_names)
            if items and any(k in FRAMING for k, _ in items):
                items[:] = [kv for kv in items if kv[0] not in FRAMING]
            if runs:
                if fields is scanned:
                    fields = fields + runs  # (the connection's list: never mutated)
                else:
                    fields += runs  # a list of this exchange's own
        # the upstream's Content-Length line is among ``fields``, relayed as it is
        mode, self.keep = add_response_framing(
            items, req, no_body(req.method, status), content_length, self.keep, length_sent=True
        )
        resp.set_raw_fields(fields, items)
        self._emit_head(status, reason, fields, items, mode)

    def _plain_head(
        self,
        status: int,
        reason: bytes,
        fields: list[bytes],
        content_length: bytes | None,
        req: Request,
        via_line: bytes,
    ) -> None:
        """A raw head without response hooks. ``ctx.response`` is built after the client
        write (``_after_write``): nothing reads it before; its items are the list the head
        is sent with (Alt-Svc included).

        On HTTP/1.1 the client head of a repeated upstream head (``RawHead.again``: the
        same bytes as the last one, so the same status, reason, runs and Content-Length) is
        kept (:class:`~portway.http.rawhead.SentHead`) and sent again whole while what else
        it was made of is the same: the graph's Via line and the listener's Alt-Svc (the same
        objects), whether the connection stays open, the request's HTTP/1.0-ness and
        whether the response has a body (``flags``: all :func:`add_response_framing`
        reads). The same bytes, the same ``bytes_out``, framing mode and keep-alive
        decision as building it again."""
        empty = no_body(req.method, status)
        h = self.uconn._head
        out = self.out
        conn = self.conn
        # (nothing is queued before a raw head: a 1xx takes the field-by-field parse)
        kept = isinstance(conn, ServerConnection) and h.again and fields is h.last_fields
        alt: bytes | None = None
        flags = 0
        if kept:
            alt = cast(ServerConnection, conn).alt_svc
            flags = (1 if self.keep else 0) | (2 if req.version == "1.0" else 0)
            if empty:
                flags |= 4
            sent = h.sent
            if (
                sent is not None
                and sent.key is h.last
                and sent.via is via_line
                and sent.alt is alt
                and sent.flags == flags
                and not out
            ):
                self.keep = sent.keep
                self.raw_status = status
                self.raw_reason = reason
                self.raw_fields = sent.fields
                self.raw_items = sent.items
                head = sent.head
                out.append(head)
                self.ctx.bytes_out += len(head)
                mode = sent.mode
                self.mode = mode
                self.chunked_out = mode == "chunked"
                self.head_sent = True
                return
        if via_line:
            fields = [*fields, via_line]
        items: list[tuple[bytes, bytes]] = []
        mode, self.keep = add_response_framing(
            items, req, empty, content_length, self.keep, length_sent=True
        )
        self.raw_status = status
        self.raw_reason = reason
        self.raw_fields = fields
        self.raw_items = items
        if kept and not out:
            self._emit_head(status, reason, fields, items, mode)
            head = b"".join(out)
            out.clear()
            out.append(head)
            h.sent = SentHead(h.last, via_line, alt, flags, head, fields, items, mode, self.keep)
            return
        self._emit_head(status, reason, fields, items, mode)

    def _emit_head(
        self,
        status: int,
        reason: bytes,
        runs: list[bytes],
        items: list[tuple[bytes, bytes]],
        mode: str,
    ) -> None:
        """Queue the head for the one join in ``settle`` (no head bytes of their own): the
        status line, ``runs`` of whole lines as the upstream sent them, ``items``."""
        out = self.out
        # the connection's last status line while the status and reason are the same (the
        # same reason object: the reason of a raw head that was not scanned again)
        h = self.uconn._head
        if reason is h.out_reason and status == h.out_status:
            line = h.out_line
        else:
            line = h.out_line = status_line(status, reason)
            h.out_status = status
            h.out_reason = reason
        out.append(line)
        size = len(line) + 2
        # (HTTP/1.1 only: a stream's exchange, ``fastsink.py``, has its own): the cast makes
        # the reads native, compiled, where the ``FastConn`` protocol's are ``getattr``s
        alt = cast(ServerConnection, self.conn).alt_svc
        if alt is not None:  # the listener advertises HTTP/3 (server/quic.py)
            items.append((b"alt-svc", alt))
        for run in runs:
            out.append(run)
            size += len(run)
        if items:
            size += append_fields(out, items)
        self.ctx.bytes_out += size
        out.append(b"\r\n")
        self.mode = mode
        self.chunked_out = mode == "chunked"
        self.head_sent = True

    def on_body(self, data: bytes) -> None:
        if not self.head_sent or self.mode == "none":
            return
        self.ctx.bytes_out += len(data)
        self.out.append(chunk(data) if self.chunked_out else data)

    def on_trailer(self, name: bytes, value: bytes) -> None:
        if self.trailers is None:
            self.trailers = []
        self.trailers.append((name, value))

    def on_end(self) -> None:
        self.ended = True
        if self.chunked_out:
            self.out.append(last_chunk(Headers(self.trailers) if self.trailers else None))

    # --- outside the parser ------------------------------------------------------------------
    def settle(self) -> None:
        if self.done:
            return
        if self.pending is not None:
            self._fall_back(self.pending)
            return
        out = self.out
        if out:
            conn = cast(ServerConnection, self.conn)  # (as in ``_emit_head``)
            if conn.closed or conn.transport is None:
                out.clear()
                self._abort_client()
                return
            n = len(out)
            if n == 1:
                conn.write_soon(out[0])
            elif n == 2:
                # the head and the body (a kept head, a Content-Length body in one read):
                # handed as two pieces, not joined (``write_soon``'s ``body``)
                conn.write_soon(out[0], out[1])
            else:
                conn.write_soon(b"".join(out))
            out.clear()
            if conn._can_write is not None and not self.paused and not self.ended:
                # the client is not keeping up: stop reading the upstream until it drains
                self.paused = True
                t = self.uconn.transport
                if t is not None:
                    t.pause_reading()
                conn._can_write.add_done_callback(self._resume)
        # what the client write did not need, now that it is out
        self._after_write()
        if self.ended:
            self._end(True, notify=True)

    def _resume(self, _: asyncio.Future[None]) -> None:
        self.paused = False
        t = self.uconn.transport
        if t is not None and not self.uconn.closed:
            t.resume_reading()

    def on_error(self, exc: BaseException) -> None:
        if self.done:
            return
        if self.head_sent:
            if not isinstance(exc, ConnectionError):
                log.warning("upstream body failed mid-stream: %s", exc)
            self._abort_client()
            return
        if isinstance(exc, GatewayError):
            # ours (a bug while reading the response, a client's timeout): no outcome of
            # the target's, nothing recorded against it
            self.up.release(self.target)
            self._fall_back(Resume(attempt=1, error=exc))
            return
        latency = self.conn.now() - self.t0
        req = self.ctx.request
        a = classify_failure(exc, req.method in IDEMPOTENT)
        if a is None:
            a = _Attempt("reset", True, UpstreamError(str(exc), source="upstream"))
        if a.reason == "stale":
            # a pooled connection the upstream closed as we reused it: one free retry
            self._fall_back(Resume(stale_retried=True))
            return
        self._fall_back(self._after_failure(a, latency))

    def _after_failure(self, a: _Attempt, latency: float) -> Resume:
        try:
            delay = after_failure(self.ctx, self.up, self.target, a, 1, latency, self.deadline)
        except GatewayError as e:
            return Resume(attempt=1, error=e)
        return Resume(attempt=1, exclude={self.target}, last_error=a.error, delay=delay)

    # --- FastConn.exchange ------------------------------------------------------------------------
    def client_lost(self) -> None:
        if self.done:
            return
        if not self.head_sent:
            self.up.release(self.target)
        self._end(False, notify=False)

    # --- endings ----------------------------------------------------------------------------------
    def _abort_client(self) -> None:
        self.conn.abort()
        self._end(False, notify=False)

    def _end(self, ok: bool, notify: bool) -> None:
        self.done = True
        self._after_write()
        uconn = self.uconn
        self.target.in_flight -= 1
        if self.paused and uconn.transport is not None and not uconn.closed:
            self.paused = False
            uconn.transport.resume_reading()
        if ok and self.up_keep_alive and uconn.reusable:
            pool: ConnectionPool = self.target.pool
            # (the loop time of the response's last bytes: read as they arrived)
            pool.release(uconn, uconn.last_io)
        else:
            uconn.finish()
            uconn.abort() if not ok else uconn.close()
        ctx = self.ctx
        if not ok:
            ctx.error = ctx.error or ConnectionError("client connection lost")
        ctx.served = FAST
        self.graph.request_done(self.rt.chain, ctx)
        self.graph.inflight -= 1
        if notify:
            # the response went out as the upstream's bytes arrived: their time is now
            keep = self.keep and ok
            conn = self.conn
            if isinstance(conn, ServerConnection):
                conn.fast_done(keep, uconn.last_io)  # (native, compiled)
            else:
                conn.fast_done(keep, uconn.last_io)

    def _fall_back(self, resume: Resume) -> None:
        """The worker task carries on from here (nothing has reached the client)."""
        self.done = True
        self._after_write()
        uconn = self.uconn
        self.target.in_flight -= 1
        uconn.finish()
        uconn.abort()
        self.graph.inflight -= 1
        self.ctx.response = None
        self.app.fast_fallbacks += 1
        self.conn.fast_fallback(Resumed(self.app, self.graph, self.ctx, self.rt, resume))


class Resumed:
    """A task-free exchange handed back to the worker task."""

    __slots__ = ("app", "ctx", "graph", "resume", "rt")

    def __init__(
        self,
        app: ProxyApp,
        graph: RuntimeGraph,
        ctx: RequestContext,
        rt: RouteRuntime,
        resume: Resume,
    ) -> None:
        self.app = app
        self.graph = graph
        self.ctx = ctx
        self.rt = rt
        self.resume = resume

    async def run(self, conn: ClientConnection) -> bool:
        self.ctx.served = FALLBACK
        return await self.app.serve(conn, self.ctx, self.graph, self.rt, self.resume)

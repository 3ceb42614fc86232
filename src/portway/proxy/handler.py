"""The request lifecycle: route → on_request → upstream → on_response → stream → on_log."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from portway.digest import compare_digest
from portway.errors import (
    BadRequestError,
    GatewayError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    UpstreamError,
)
from portway.http.body import BodyStream
from portway.http.grpc_status import grpc_error_response, is_grpc_request
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.http.relay import add_connection_field, add_response_framing, no_body, without_framing
from portway.http.requestid import new_request_id, well_formed
from portway.http.server import App, ClientConnection, ClientDisconnectedError, ServerConnection
from portway.http.serverapi import FastConn
from portway.pipeline.context import RequestContext
from portway.pipeline.runner import Chain
from portway.proxy.buffering import buffer_request_body
from portway.proxy.fast import NOT_TAKEN, STARTED, try_fast
from portway.proxy.forward import Forwarder, Resume, prepare_upstream_request
from portway.proxy.tunnel import tunnel

if TYPE_CHECKING:
    from portway.routing.router import RouteMatch
    from portway.runtime.graph import RouteRuntime, RuntimeGraph

log: Final = logging.getLogger("portway.proxy")


class ProxyApp(App):
    """Serves client connections with the current :class:`RuntimeGraph`.

    ``graph_ref()`` returns the graph to use for a new request; a request keeps that graph
    until its last byte, so a reload never changes a request midway.
    """

    def __init__(
        self,
        graph_ref: Callable[[], RuntimeGraph],
        on_open: Callable[[], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.graph_ref = graph_ref
        self._on_open = on_open
        self._on_close = on_close
        self.connections = 0
        #: requests served by the task-free path, and those it handed back to a task
        self.fast_requests = 0
        self.fast_fallbacks = 0
        #: the task-free path may be used (``bench/hotpath_bench.py --general`` turns it off)
        self.fast = True

    def owned_headers(self) -> frozenset[bytes]:
        return self.graph_ref().owned_headers

    def fields_unread(self) -> bool:
        return self.graph_ref().fields_unread

    def connection_opened(self) -> None:
        self.connections += 1
        if self._on_open is not None:
            self._on_open()

    def connection_closed(self) -> None:
        self.connections -= 1
        if self._on_close is not None:
            self._on_close()

    def try_fast(self, conn: FastConn, req: Request) -> bool:
        if not self.fast:
            return False
        done = try_fast(self, conn, req)
        if done == STARTED:
            self.fast_requests += 1
        return done != NOT_TAKEN

    async def handle(self, conn: ClientConnection, req: Request) -> bool:
        ctx = RequestContext(req)
        if conn.extra:
            ctx.extra.update(conn.extra)
        return await self.serve(conn, ctx, self.graph_ref())

    async def serve(
        self,
        conn: ClientConnection,
        ctx: RequestContext,
        graph: RuntimeGraph,
        rt: RouteRuntime | None = None,
        resume: Resume | None = None,
    ) -> bool:
        """Serve ``ctx.request`` with ``graph``; with ``rt`` and ``resume``, carry on a
        request the task-free path routed and started (see ``proxy/fast.py``)."""
        req = ctx.request
        graph.inflight += 1
        chain: Chain = graph.global_chain
        keep = False
        in_response = False
        tracer = graph.tracer
        if tracer.enabled:
            tracer.start_request(ctx)
            ctx.extra["_tracer"] = tracer
        try:
            if graph.debug_token is not None:
                tok = req.headers.get_raw(b"x-portway-debug")
                if tok is not None and compare_digest(tok, graph.debug_token):
                    ctx.debug = True
                    ctx.trace = []
                    if b"explain" in req.query.split(b"&"):
                        # handled as usual; the answer is then replaced by the explanation
                        ctx.extra["_explain"] = graph.config.routes
            if rt is None:
                rt = self._route(ctx, graph)
                chain = rt.chain
                if req.expect_continue:
                    # a plugin that reads the body first sends the 100 through it
                    # (pipeline/buffering.py)
                    ctx.extra["_client"] = conn
                if graph.profiles is not None:
                    # BFF profile: one prebuilt chain per (route, profile); see proxy/profiles.py
                    profiled: Chain | None = graph.profiles.chain_for(ctx, conn, rt)
                    if profiled is None:
                        chain = graph.global_chain  # a 404 like an unmatched path
                        raise NotFoundError(
                            "this route does not serve the request's profile",
                            code="profile_not_served",
                        )
                    chain = profiled
                resp = await chain.run_request(ctx)
            else:
                # carried on from the task-free path: its request hooks already ran (and
                # its response hooks, when they failed there)
                chain = rt.chain
                in_response = resume is not None and resume.in_response
                if ctx.upstream_request is req:  # no hook, no copy yet
                    ctx.upstream_request = req.copy_for_upstream()
                resp = resume.response if resume is not None else None
                if resume is not None and resume.suspended is not None:
                    # a sync hook suspended on the task-free path: finished here, not rerun
                    resp = await chain.resume_request(ctx, resume.suspended)
            if resp is None and rt.aggregate is not None:
                resp = await rt.aggregate.run(ctx, graph)
            elif resp is None:
                if rt.upstream is None:
                    raise NotFoundError("route has no upstream")
                if req.upgrade and not rt.websocket:
                    # the route does not tunnel WebSocket: a plain request without the upgrade
                    # (http/upgrade.py), and the connection ends with it (llhttp reads
                    # nothing after an upgrade request)
                    req.upgrade = False
                    req.keep_alive = False
                    ctx.upstream_request.upgrade = False
                if req.body is not None and rt.buffer_max is not None:
                    await buffer_request_body(ctx, rt.buffer_max, conn)
                prepare_upstream_request(ctx, rt, graph)
                tr = rt.traffic
                if req.upgrade and isinstance(conn, ServerConnection):  # HTTP/1.1 only
                    urt = rt if tr is None else tr.choose(ctx).rt
                    return await tunnel(ctx, urt, graph, conn, Forwarder(graph))
                if tr is None and rt.upstream.protocol != "http1":
                    resp = await _forward_h2(ctx, rt, graph, conn)  # proxy/h2upstream.py
                elif tr is None:
                    resp = await Forwarder(graph).forward(ctx, rt, conn, resume)
                else:  # split / versions / mirror / fallback: proxy/traffic.py
                    resp = await tr.forward(ctx, graph, conn, resume)
            ctx.response = resp
            if chain.on_response:
                in_response = True
                await chain.run_response(ctx)
                in_response = False
            if ctx.debug:
                if "_explain" in ctx.extra:
                    resp = _explain(ctx)
                resp.headers.set("x-portway-debug", _debug_header(ctx))
            keep = await self._send(conn, ctx, chain)
        except (ClientDisconnectedError, ConnectionError) as e:
            if isinstance(e, UpstreamError):
                raise
            keep = False
        except GatewayError as e:
            keep = await self._fail(conn, ctx, chain, e, in_response)
        except Exception as e:  # a bug must cost one request, not the connection's others
            log.exception("unexpected error while proxying %s %s", req.method, req.path)
            err = GatewayError("internal error")
            keep = await self._fail(conn, ctx, chain, err, in_response, close=True)
            ctx.error = e
        finally:
            Forwarder.finish_exchange(ctx, ok=False)
            graph.request_done(chain, ctx)
            if tracer.enabled:
                tracer.end_request(ctx)
            graph.inflight -= 1
        return keep

    def _route(self, ctx: RequestContext, graph: RuntimeGraph) -> RouteRuntime:
        req = ctx.request
        m = graph.router.match(req.host, req.method, req.path, req.headers)
        if m is None and req.method == "OPTIONS":
            m = _preflight_match(graph, req)
        if m is None:
            allowed = getattr(graph.router, "allowed_methods", None)
            methods = allowed(req.host, req.path, req.headers) if allowed is not None else None
            if methods:
                raise MethodNotAllowedError(
                    f"method {req.method} not allowed",
                    headers=[("allow", ", ".join(sorted(methods)))],
                )
            raise NotFoundError("no route matched")
        ctx.match = m
        if ctx.trace is not None:
            ctx.record("route", m.name, 0.0, f"{m.pattern} ({m.considered} considered)")
        rt = graph.routes[m.index]
        if "%" in req.path and not rt.config.allow_encoded_slashes:
            p = req.path
            if "%2F" in p or "%5C" in p:
                raise BadRequestError("encoded '/' or '\\' in path is not allowed")
        limit = rt.max_body
        if limit is not None and req.content_length is not None and req.content_length > limit:
            raise PayloadTooLargeError("request body too large")
        return rt

    async def _send(
        self, conn: ClientConnection, ctx: RequestContext, chain: Chain, close: bool = False
    ) -> bool:
        """Write ``ctx.response``; return whether the connection may be reused (the response
        says ``Connection: close`` exactly when it may not)."""
        req = ctx.request
        resp = ctx.response
        assert resp is not None
        if resp.status >= 400 and not resp.upstream and is_grpc_request(req):
            # gRPC clients read errors from grpc-status, not from an HTTP status and JSON
            resp = ctx.response = grpc_error_response(resp, req)
        keep = not close and req.keep_alive and _body_done(req)
        status = resp.status
        empty = no_body(req.method, status)
        headers = resp.headers
        items = without_framing(headers.raw())
        body = resp.body
        transform = bool(chain.on_response_chunk)
        reframe = chain.transforms_body
        if isinstance(body, bytes):
            if transform:
                body = await chain.run_chunk(ctx, body, True)
            if not empty or req.method == "HEAD":
                items.append((b"content-length", str(len(body)).encode()))
            add_connection_field(items, req, keep)
            ctx.extra["_head_sent"] = True
            sent = b"" if empty else body
            size = conn.send_head(
                status, resp.reason, items, "none" if empty else "length", sent, True
            )
            conn.send_end(None)
            ctx.bytes_out += size + len(sent)
            Forwarder.finish_exchange(ctx, ok=True)
            return keep
        # streamed upstream body
        cl = None if reframe else headers.get_raw(b"content-length")
        mode, keep = add_response_framing(items, req, empty, cl, keep)
        ctx.extra["_head_sent"] = True
        if mode == "length" and not transform:
            # head + whatever body is already here in one write: a syscall per response saved
            first = body.read_nowait()
            if first:
                done = body.at_eof
                ctx.bytes_out += conn.send_head(status, resp.reason, items, mode, first, done)
                ctx.bytes_out += len(first)
                if done:
                    conn.send_end(None)
                    Forwarder.finish_exchange(ctx, ok=True)
                    return keep
                ok = await self._stream(conn, ctx, chain, body, mode, transform)
                Forwarder.finish_exchange(ctx, ok=ok)
                return keep and ok
        ctx.bytes_out += conn.send_head(status, resp.reason, items, mode, b"", mode == "none")
        if mode == "none":
            conn.send_end(None)
            Forwarder.finish_exchange(ctx, ok=body.at_eof or req.method == "HEAD")
            return keep
        ok = await self._stream(conn, ctx, chain, body, mode, transform)
        Forwarder.finish_exchange(ctx, ok=ok)
        return keep and ok

    async def _stream(
        self,
        conn: ClientConnection,
        ctx: RequestContext,
        chain: Chain,
        body: BodyStream,
        mode: str,
        transform: bool,
    ) -> bool:
        try:
            while True:
                data = body.read_nowait()
                if data is None:
                    data = await body.read()
                if not data:
                    break
                if transform:
                    data = await chain.run_chunk(ctx, data, False)
                    if not data:
                        continue
                ctx.bytes_out += len(data)
                conn.send_body(data)
                if conn._can_write is not None:
                    await conn.drain()
        except (ConnectionError, TimeoutError, GatewayError) as e:
            # the status line is gone: the only honest signal left is an aborted connection
            if not isinstance(e, ClientDisconnectedError):
                log.warning("upstream body failed mid-stream: %s", e)
            conn.abort()
            return False
        tail = b""
        if transform:
            tail = await chain.run_chunk(ctx, b"", True)
            if tail:
                ctx.bytes_out += len(tail)
        if tail:
            conn.send_body(tail)
        conn.send_end(body.trailers)
        if mode == "close":
            conn.close()
            return False
        return True

    async def _fail(
        self,
        conn: ClientConnection,
        ctx: RequestContext,
        chain: Chain,
        err: GatewayError,
        in_response: bool,
        close: bool = False,
    ) -> bool:
        ctx.error = err
        if ctx.extra.get("_head_sent") or conn.closed:
            # the status line is gone: the only honest signal left is an aborted connection
            conn.abort()
            return False
        Forwarder.finish_exchange(ctx, ok=False)
        if not ctx.request_id:
            # errors before any plugin ran (no route, bad path) still carry a request id
            ctx.request_id = _request_id(ctx.request)
        resp: Response | None = None
        if chain.on_error:
            resp = await chain.run_error(ctx, err)
        if resp is None:
            h = Headers([(b"content-type", b"application/json")])
            for k, v in err.headers:
                h.add(k, v)
            resp = Response(err.status, h, err.body(ctx.request_id or None))
        ctx.response = resp
        if chain.on_response and not in_response:
            try:
                await chain.run_response(ctx)
            except GatewayError as e2:
                log.warning("on_response failed while answering an error: %s", e2)
        if ctx.debug:
            if "_explain" in ctx.extra:
                resp = _explain(ctx)
            resp.headers.set("x-portway-debug", _debug_header(ctx))
        try:
            return await self._send(conn, ctx, chain, close=close)
        except (ConnectionError, GatewayError):
            conn.abort()
            return False


def _preflight_match(graph: RuntimeGraph, req: Request) -> RouteMatch | None:
    """A CORS preflight routes by the method it announces (Access-Control-Request-Method),
    onto a route that binds ``cors`` (which answers it): routes need not list OPTIONS."""
    acrm = req.headers.get_raw(b"access-control-request-method")
    if acrm is None or req.headers.get_raw(b"origin") is None:
        return None
    m = graph.router.match(req.host, acrm.decode("latin-1").strip(), req.path, req.headers)
    if m is None:
        return None
    for p in graph.routes[m.index].chain.plugins:
        if p.name == "cors":
            return m
    return None


async def _forward_h2(
    ctx: RequestContext, rt: RouteRuntime, graph: RuntimeGraph, conn: ClientConnection
) -> Response:
    # the h2 stack (h2, hpack, hyperframe) is imported by the first HTTP/2 upstream request
    from portway.proxy.h2upstream import forward_h2, uses_h2

    assert rt.upstream is not None
    if not uses_h2(rt.upstream):  # ``auto`` with no TLS target speaking h2
        return await Forwarder(graph).forward(ctx, rt, conn)
    return await forward_h2(ctx, rt, graph, conn)


def _request_id(req: Request) -> str:
    rid = req.headers.get_raw(b"x-request-id")
    if rid is not None and well_formed(rid):
        return rid.decode()
    return new_request_id()


def _body_done(req: Request) -> bool:
    b = req.body
    return b is None or b.complete


def _debug_header(ctx: RequestContext) -> str:
    from portway.observability.debug import debug_header

    return debug_header(ctx)


def _explain(ctx: RequestContext) -> Response:
    """Replace the response ``ctx`` got with its explanation (``?explain``); an upstream body
    not read yet is dropped with its connection."""
    from portway.observability.debug import explain_response

    resp = explain_response(ctx, ctx.extra["_explain"])
    Forwarder.finish_exchange(ctx, ok=False)
    ctx.response = resp
    return resp

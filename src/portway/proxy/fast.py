"""The task-free path: a whole exchange on callbacks, for requests nothing needs to await.

The general path (``handler.ProxyApp.handle``) runs each request in the connection's worker
task: futures for the response head, a :class:`BodyStream` between the two sockets, plugin
phases awaited in turn. That costs several loop iterations and a few hundred Python calls
per request. When a route's chain has no request or response phase (``Chain.callbacks_only``),
the request has no body and is no upgrade, and the picked target has an idle pooled
connection, none of that is needed: :func:`try_fast` writes the upstream request from inside
the client parser's callback and :class:`FastExchange` relays the response from inside the
upstream parser's callbacks, one client write per batch of upstream bytes.

It is the same proxy, not a lesser one: the same header rules (``http/forwarding.py``,
``http/relay.py``), the same balancer, breaker and health bookkeeping, the same
timeouts (the sweeper), flow control (the upstream is paused while the client's write buffer
is full), ``on_log`` hooks and observers. Anything it does not finish on its own — a failure
before the response head, a retry on status — goes back to the worker task through
:class:`Resume`, so retry and error behaviour are the general path's own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from portway.errors import GatewayError
from portway.http.grpc_status import is_grpc_request
from portway.http.models import Request, Response
from portway.http.path import has_percent
from portway.http.pool import ConnectionPool
from portway.http.server import ServerConnection
from portway.pipeline.context import FAST, RequestContext
from portway.pipeline.pending import Pending
from portway.pipeline.suspend import HookSuspended
from portway.proxy.fastexchange import FastExchange, Resumed
from portway.proxy.fastlines import answer_bytes, request_head
from portway.proxy.fastsink import StreamExchange, answer_stream
from portway.proxy.forward import (
    Resume,
)

if TYPE_CHECKING:
    from portway.http.serverapi import FastConn
    from portway.proxy.handler import ProxyApp
    from portway.runtime.graph import RouteRuntime, RuntimeGraph
    from portway.upstream.target import Target
    from portway.upstream.upstream import Upstream

log: Final = logging.getLogger("portway.proxy")

_NO_EXCLUDE: Final[frozenset[Target]] = frozenset()


#: what :func:`try_fast` did: nothing, started an exchange, or handed the request to the task
NOT_TAKEN: Final = 0
STARTED: Final = 1
HANDED_OVER: Final = 2
#: parked while a request hook waits on a future (:class:`Parked`); it goes on from the
#: future's callback (counted in ``fast_requests`` then, when an exchange starts)
PARKED: Final = 3


def try_fast(app: ProxyApp, conn: FastConn, req: Request) -> int:
    """Start ``req`` on the task-free path (:data:`STARTED`), or hand it, routed and with its
    target picked, to the connection's task (:data:`HANDED_OVER`: no idle pooled connection
    to that target, and connecting is an await), or park it while a request hook waits on
    a future (:data:`PARKED`: it carries on from that future's callback); :data:`NOT_TAKEN`
    (nothing changed) when it does not qualify.

    Called from inside the client parser's callback, so it must never raise. Whether the
    request qualifies is decided before any hook runs; once one ran, a failure (a bug) hands
    the request to the task *after* its hooks (:class:`Resume`), never back to its start."""
    try:
        return _start(app, conn, req)
    except Exception:
        log.exception("task-free path failed to start; using the general path")
        return NOT_TAKEN


def _start(app: ProxyApp, conn: FastConn, req: Request) -> int:
    graph = app.graph_ref()
    if req.upgrade or graph.tracing or graph.profiles is not None:
        return NOT_TAKEN
    if graph.debug_token is not None and req.headers.get_raw(b"x-portway-debug") is not None:
        return NOT_TAKEN
    m = graph.router.match(req.host, req.method, req.path, req.headers)
    if m is None:
        return NOT_TAKEN  # 404/405 are the general path's to explain
    rt = graph.routes[m.index]
    up = rt.upstream
    chain = rt.chain
    if up is None or not chain.sync_request or up.protocol != "http1":
        return NOT_TAKEN  # HTTP/2 upstreams (proxy/h2upstream.py) need a task
    if not chain.callbacks_only and not chain.on_request:
        return NOT_TAKEN  # nothing to run here: the task does all of it
    tr = rt.traffic
    if tr is not None and not tr.fast_ok:
        return NOT_TAKEN  # mirror / fallback need a task
    path = req.path
    if has_percent(path) and not rt.encoded_slashes and ("%2F" in path or "%5C" in path):
        return NOT_TAKEN
    hooks = bool(chain.on_request)
    # the upstream request is a copy only when a hook may edit it in place (a chain of
    # copy-on-edit hooks shares it; the general path copies it if it gets the request)
    ctx = RequestContext(req, copy=chain.copies_upstream_request, id_set=chain.sets_id_first)
    ctx.match = m
    ctx.upstream_name = up.name
    ctx.attempt = 1
    # narrowed: the ``FastConn`` protocol's ``extra`` is a getattr, the class's a native call
    if isinstance(conn, ServerConnection):  # noqa: SIM108
        extra = conn.extra
    else:
        extra = conn.extra
    if extra:
        ctx.extra.update(extra)
    answer: Response | None = None
    if hooks:
        # from here on the request must not go back to the general path's start: the hooks
        # ran; whatever comes next is handed over with what they decided
        try:
            ran = chain.run_request_sync(ctx)
        except GatewayError as e:
            return _hand_over(conn, Resumed(app, graph, ctx, rt, Resume(error=e)))
        except HookSuspended as s:
            return _suspended(app, graph, conn, ctx, rt, s)
        if isinstance(ran, Pending):
            return _park(app, graph, conn, ctx, rt, ran)
        answer = ran
    return _after_hooks(app, graph, conn, req, ctx, rt, up, hooks, answer)


def _after_hooks(
    app: ProxyApp,
    graph: RuntimeGraph,
    conn: FastConn,
    req: Request,
    ctx: RequestContext,
    rt: RouteRuntime,
    up: Upstream,
    hooks: bool,
    answer: Response | None,
) -> int:
    """The part of :func:`_start` after the request hooks ran to their end (at once, or
    from a parked request's callback): write a hook's answer, or forward."""
    chain = rt.chain
    tr = rt.traffic
    if answer is not None:
        if (
            chain.answers_inline
            and req.keep_alive
            and isinstance(answer.body, bytes)
            and conn.transport is not None
            and not conn.closed
            and conn._can_write is None  # a client not reading: the task's, as before
        ):
            return _answer(app, graph, conn, ctx, rt, answer)
        return _hand_over(conn, Resumed(app, graph, ctx, rt, Resume(response=answer)))
    if not chain.callbacks_only:
        # a chunk or error hook needs the task for the upstream exchange (a cache miss):
        # it carries on after the request hooks
        return _hand_over(conn, Resumed(app, graph, ctx, rt, Resume()))
    try:
        return _forward(app, graph, conn, req, ctx, rt, up, hooks)
    except Exception:
        if not hooks and tr is None and ctx.target is None:
            raise  # nothing ran and nothing was taken: the general path starts afresh
        log.exception("task-free path failed after the request hooks; the task carries on")
        return _hand_over(conn, Resumed(app, graph, ctx, rt, Resume()))


def _suspended(
    app: ProxyApp,
    graph: RuntimeGraph,
    conn: FastConn,
    ctx: RequestContext,
    rt: RouteRuntime,
    s: HookSuspended,
) -> int:
    """A request hook awaited after all (``s``): when it waits on a future (a Redis
    decision, ``state/resp.py``), the request is parked until that future is done and
    carries on task-free from its callback (:class:`Parked`); anything else is handed to
    the task, which finishes the hook (it is not run again)."""
    fut = s.yielded
    if isinstance(fut, asyncio.Future) and not fut.done():
        # the traceback holds the frames that raised it, and this exception is kept until
        # the callback: drop it so no reference cycle outlives the request
        s.__traceback__ = None
        parked = Parked(app, graph, conn, ctx, rt, s)
        conn.exchange = parked
        graph.inflight += 1
        fut.add_done_callback(parked.wake)
        return PARKED
    return _hand_over(conn, Resumed(app, graph, ctx, rt, Resume(suspended=s)))


def _park(
    app: ProxyApp,
    graph: RuntimeGraph,
    conn: FastConn,
    ctx: RequestContext,
    rt: RouteRuntime,
    p: Pending,
) -> int:
    """A request hook's outcome comes later (``p``: a Redis decision in flight): park the
    request until ``p`` finishes; it carries on task-free from ``p.on_done``."""
    parked = Parked(app, graph, conn, ctx, rt, None, p)
    conn.exchange = parked
    graph.inflight += 1
    if p.done:  # (finished already: carry on now)
        parked.resume(p)
    else:
        p.on_done = parked.resume
    return PARKED


def _forward(
    app: ProxyApp,
    graph: RuntimeGraph,
    conn: FastConn,
    req: Request,
    ctx: RequestContext,
    rt: RouteRuntime,
    up: Upstream,
    hooks: bool,
) -> int:
    """The part of :func:`_start` after the request hooks: choose, pick, write the head."""
    tr = rt.traffic
    if tr is not None:
        # the variant (split / versions) is chosen now, once; the task carries on with it
        try:
            choice = tr.choose(ctx)
        except GatewayError as e:
            return _hand_over(conn, Resumed(app, graph, ctx, rt, Resume(error=e)))
        if choice.headers:  # a cookie or Deprecation fields to add: the general path does
            return _hand_over(conn, Resumed(app, graph, ctx, rt, Resume()))
        rt = choice.rt
        vup = rt.upstream
        assert vup is not None
        up = vup
        ctx.upstream_name = up.name
    target = up.pick(ctx, _NO_EXCLUDE)
    if target is None:
        if not hooks and tr is None:
            return NOT_TAKEN
        return _hand_over(conn, Resumed(app, graph, ctx, rt, Resume()))
    # typed locally: ``Target.pool`` is ``Any`` (no import of the pool there), which would
    # make every pool call a Python method call
    pool: ConnectionPool = target.pool
    # HTTP/1.1 narrowed: native reads, compiled, where the ``FastConn`` protocol's are getattrs
    h1 = conn if isinstance(conn, ServerConnection) else None
    now = h1.now() if h1 is not None else conn.now()
    uconn = pool.acquire_idle(now)
    if uconn is None or uconn.transport is None:
        # connecting is an await: the task does it (and fills the pool), with this target —
        # picking again there would cost the balancer a turn
        return _hand_over(conn, Resumed(app, graph, ctx, rt, Resume(target=target)))
    try:
        memo = h1.forward_memo if h1 is not None else conn.forward_memo
        head = request_head(req, rt, graph, target, ctx, memo)
        if h1 is not None:
            ex = FastExchange(app, graph, conn, ctx, rt, up, target, uconn, now)
        else:  # an HTTP/2 stream: the response goes through its send_head/send_body
            ex = StreamExchange(app, graph, conn, ctx, rt, up, target, uconn, now)
        uconn.begin_sink(ex, req.method == "HEAD", rt.read_timeout)
    except Exception:
        # a bug before anything was written: the pooled connection is given up (never
        # leaked), the pick released; the caller hands the request over after its hooks
        uconn.abort()
        up.release(target)
        ctx.target = target  # (tells the caller something was taken)
        raise
    ctx.target = target
    uconn.write_soon(head)
    target.in_flight += 1
    uconn.arm_read_timeout(now + rt.try_timeout, now)
    graph.inflight += 1
    conn.exchange = ex
    return STARTED


def _answer(
    app: ProxyApp,
    graph: RuntimeGraph,
    conn: FastConn,
    ctx: RequestContext,
    rt: RouteRuntime,
    answer: Response,
) -> int:
    """Write ``answer`` (a request hook's, ``bytes`` body) now, without a task or upstream:
    what ``handler.ProxyApp.serve``/``_send`` do with it, in the same order and to the same
    bytes — the response hooks of the plugins the request reached, their chunk hooks, the
    head framed by Content-Length, then ``on_log`` and the observers. A head the answering
    plugin prebuilt (:meth:`Response.set_raw_fields`, e.g. a cache hit) and no hook read is
    written from its lines as they are. Anything unusual goes to the task instead."""
    chain = rt.chain
    req = ctx.request
    ctx.response = answer
    resp = answer
    body = answer.body
    assert isinstance(body, bytes)  # (the caller's condition)
    if chain.answer_is_quiet(ctx):
        # no response or chunk hook runs for this answer (a cache hit on most routes)
        if resp.status >= 400 and is_grpc_request(req):
            return _hand_over(conn, Resumed(app, graph, ctx, rt, Resume(response=resp)))
    else:
        try:
            if chain.on_response:
                chain.run_response_sync(ctx)
            resp = ctx.response
            body = resp.body
            if not isinstance(body, bytes) or (resp.status >= 400 and is_grpc_request(req)):
                # a hook swapped in a streamed body, or gRPC's error mapping: the task's
                return _hand_over(conn, Resumed(app, graph, ctx, rt, Resume(response=resp)))
            if chain.on_response_chunk:
                body = chain.run_chunk_sync(ctx, body)
        except GatewayError as e:
            ctx.response = None
            return _hand_over(conn, Resumed(app, graph, ctx, rt, Resume(error=e)))
    if isinstance(conn, ServerConnection):
        data, size, empty = answer_bytes(req, resp, body)
        conn.write_soon(data)
    else:  # an HTTP/2 stream: HEADERS (+ DATA) through its writer
        size, empty = answer_stream(conn, req, resp, body)
    ctx.bytes_out += size + (0 if empty else len(body))
    ctx.served = FAST
    graph.request_done(chain, ctx)
    conn.fast_done(True)
    return STARTED


def _hand_over(conn: FastConn, resumed: Resumed) -> int:
    conn.fast_fallback(resumed)
    return HANDED_OVER


class Parked:
    """A request parked on the task-free path while a request hook waits on a future (a
    Redis rate-limit decision): the connection's current exchange meanwhile, so pipelined
    requests queue behind it (HTTP/1.1 order) and a client that goes away is told
    (:meth:`client_lost`). Ends exactly once: the future's callback (:meth:`wake`) carries
    the request on — the hook is sent on, the chain's later hooks run, then the answer or
    the upstream exchange as :func:`_start` does — or the client left first and the hook
    is closed at once (``GeneratorExit`` where a task would see ``CancelledError``: its
    ``finally`` blocks run; the future is not cancelled, it may be shared). No timer of its
    own: the future's owner bounds the wait (the store's reply timeout fails it, and the
    hook applies its store-error policy).
    """

    __slots__ = ("app", "conn", "ctx", "done", "graph", "p", "rt", "s")

    def __init__(
        self,
        app: ProxyApp,
        graph: RuntimeGraph,
        conn: FastConn,
        ctx: RequestContext,
        rt: RouteRuntime,
        s: HookSuspended | None,
        p: Pending | None = None,
    ) -> None:
        """Parked on ``s`` (a suspended coroutine hook: :meth:`wake` from its future) or on
        ``p`` (a hook's :class:`Pending`: :meth:`resume` from its ``on_done``)."""
        self.app = app
        self.graph = graph
        self.conn = conn
        self.ctx = ctx
        self.rt = rt
        self.s = s
        self.p = p
        self.done = False

    def client_lost(self) -> None:
        if self.done:
            return
        self.done = True
        # the hook ends now (its ``finally`` blocks run), as a cancelled task's would; the
        # future is left alone (it may be shared): its callback only reads it
        s = self.s
        if s is not None:
            s.close()
        p = self.p
        if p is not None:
            p.on_done = None  # (what it decides stands; nobody carries it on)
        ctx = self.ctx
        ctx.error = ctx.error or ConnectionError("client connection lost")
        ctx.served = FAST
        self.graph.inflight -= 1
        self.graph.request_done(self.rt.chain, ctx)

    def wake(self, fut: asyncio.Future[object]) -> None:
        s = self.s
        assert s is not None
        if self.done:
            # the client left while parked (the hook was closed then; what it decided
            # stands): the reply is read so a failed one is not reported as never retrieved
            if not fut.cancelled():
                fut.exception()
            return
        self._go(s, None)

    def resume(self, p: Pending) -> None:
        """``p`` finished: carry the request on as :meth:`wake` does."""
        if self.done:
            return
        self._go(None, p)

    def _go(self, s: HookSuspended | None, p: Pending | None) -> None:
        """Leave the connection and carry the request on from the hook that parked it:
        ``s`` (a suspended coroutine hook) or ``p`` (a :class:`Pending`)."""
        self.done = True
        graph = self.graph
        graph.inflight -= 1
        conn = self.conn
        conn.exchange = None
        app = self.app
        ctx = self.ctx
        rt = self.rt
        try:
            if p is not None:
                answer = rt.chain.continue_pending(ctx, p)
            else:
                assert s is not None
                answer = rt.chain.continue_request_sync(ctx, s)
        except GatewayError as e:
            _hand_over(conn, Resumed(app, graph, ctx, rt, Resume(error=e)))
            return
        except HookSuspended as again:
            _suspended(app, graph, conn, ctx, rt, again)
            return
        self._carry_on(answer)

    def _carry_on(self, answer: Response | Pending | None) -> None:
        app = self.app
        graph = self.graph
        conn = self.conn
        ctx = self.ctx
        rt = self.rt
        if isinstance(answer, Pending):
            _park(app, graph, conn, ctx, rt, answer)
            return
        up = rt.upstream
        assert up is not None
        try:
            if _after_hooks(app, graph, conn, ctx.request, ctx, rt, up, True, answer) == STARTED:
                app.fast_requests += 1
        except Exception:  # (a bug: _after_hooks hands over itself on what it expects)
            log.exception("task-free path failed after a parked hook; the task carries on")
            if conn.exchange is None and not conn.closed:
                _hand_over(conn, Resumed(app, graph, ctx, rt, Resume()))

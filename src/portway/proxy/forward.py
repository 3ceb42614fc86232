"""Forwarding one request upstream: header preparation, attempts, retries, one exchange.

Failover rules (after Pingora and Envoy): connect failures retry on another target for any
method; once request bytes were sent only idempotent methods (or routes marked
``retry_non_idempotent``) retry; a request whose streamed body was already consumed never
retries. A pooled connection found closed before anything was written is replaced by a fresh
one without counting as an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from portway.errors import (
    GatewayError,
    PayloadTooLargeError,
    UnavailableError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeoutError,
)
from portway.http.body import BodyStream
from portway.http.client import (
    ReadTimeoutError,
    ResponseHead,
    UpstreamConnection,
    UpstreamProtocolError,
    UpstreamResetError,
    build_request_head,
)
from portway.http.exceptions import PoolOverflowError
from portway.http.forwarding import (
    forward_header_items,
    set_request_framing,
    with_forwarded_prefix,
)
from portway.http.headers import Headers
from portway.http.models import Response
from portway.http.pool import ConnectionPool
from portway.http.relay import (
    informational_items,
    response_header_items,
    switch_allowed,
    via_value,
)
from portway.http.wire import chunk, last_chunk
from portway.pipeline.context import RequestContext
from portway.pipeline.suspend import HookSuspended
from portway.proxy.exchange import Exchange, finish_exchange
from portway.proxy.overload import overloaded
from portway.upstream.target import Target

if TYPE_CHECKING:
    from portway.http.server import ClientConnection
    from portway.observability.tracing import Tracer
    from portway.routing.router import RouteMatch
    from portway.runtime.graph import RouteRuntime, RuntimeGraph
    from portway.upstream.upstream import Upstream

log: Final = logging.getLogger("portway.proxy")

#: RFC 9110 §9.2.2: only these may be resent automatically
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class _Attempt(Exception):
    """An attempt failed; ``reason`` is a retry condition, ``sent`` whether bytes went out."""

    def __init__(self, reason: str, sent: bool, error: GatewayError) -> None:
        self.reason = reason
        self.sent = sent
        self.error = error


def prepare_upstream_request(ctx: RequestContext, rt: RouteRuntime, graph: RuntimeGraph) -> None:
    """Build the upstream request in one pass over the client's fields: drop hop-by-hop ones
    (and those named in ``Connection``), add X-Forwarded-* and Via, set framing, apply
    strip_prefix/rewrite. Framing is fixed here: a plugin that replaces the body in
    ``on_upstream_request`` must call :func:`set_request_framing` again."""
    ureq = ctx.upstream_request
    items = forward_header_items(ctx.request, ureq.headers.raw(), graph.via)
    path, prefix = upstream_path(rt, ctx.match, ureq.path)
    ureq.path = path
    if prefix is not None:
        items = with_forwarded_prefix(items, prefix)
    ureq.headers = Headers(items)
    set_request_framing(ureq)


def upstream_path(rt: RouteRuntime, m: RouteMatch | None, path: str) -> tuple[str, str | None]:
    """The path to forward after the route's ``rewrite``/``strip_prefix``, and the prefix that
    was stripped (``None`` when nothing was)."""
    if rt.rewrite is not None and m is not None:
        params = m.params
        out = "".join(params.get(v, "") if is_param else v for is_param, v in rt.rewrite)
        return (out if out.startswith("/") else "/" + out), None
    if rt.strip_prefix and m is not None and m.prefix:
        rest = path[len(m.prefix) :]
        return (rest if rest.startswith("/") else "/" + rest), m.prefix
    return path, None


async def _pump_body(
    conn: UpstreamConnection,
    body: BodyStream,
    chunked: bool,
    client: ClientConnection | None,
    expect: bool,
    write_timeout: float,
    limit: int | None,
) -> None:
    if expect and client is not None:
        client.send_info(100, b"Continue", [])
    sent = 0
    while True:
        data = body.read_nowait()
        if data is None:
            # waiting on the client: the upstream's read timeout does not run meanwhile
            # (a client stalling its body gets the 408 of server.limits.body_timeout, which
            # is never counted against the upstream)
            conn.awaiting_client = True
            try:
                data = await body.read()
            finally:
                conn.awaiting_client = False
                conn.last_io = conn.now()
        if not data:
            break
        sent += len(data)
        if limit is not None and sent > limit:
            raise PayloadTooLargeError("request body too large")
        conn.write(chunk(data) if chunked else data)
        if conn._can_write is not None:
            async with asyncio.timeout(write_timeout):
                await conn.drain()
    if chunked:
        conn.write(last_chunk(body.trailers))


@dataclass(slots=True)
class Resume:
    """Where a forward made elsewhere (the callback path) left off: ``attempt`` attempts done,
    targets to avoid, or ``error`` to answer with when no retry is allowed."""

    attempt: int = 0
    exclude: set[Target] = field(default_factory=set)
    last_error: GatewayError | None = None
    stale_retried: bool = False
    delay: float = 0.0
    error: GatewayError | None = None
    #: the target already picked for the next attempt
    target: Target | None = None
    #: the answer an ``on_request`` hook gave (nothing is forwarded)
    response: Response | None = None
    #: a ``sync_hooks`` request hook that suspended (``pipeline/suspend.py``): the task
    #: finishes it and runs the hooks after it
    suspended: HookSuspended | None = None
    #: ``error`` came out of the ``on_response`` hooks, which ran: answering it must not
    #: run them again (as on the general path)
    in_response: bool = False


def classify_failure(e: BaseException, stale_ok: bool) -> _Attempt | None:
    """Map a failed exchange to a retry condition; ``stale_ok``: a reused connection with no
    request body to replay, for an idempotent method (a silent close is then "stale")."""
    if isinstance(e, ReadTimeoutError):
        return _Attempt(
            "timeout", True, UpstreamTimeoutError("upstream timed out", source="upstream")
        )
    if isinstance(e, UpstreamResetError):
        err = UpstreamError("upstream closed the connection", source="upstream")
        return _Attempt("stale" if stale_ok and not e.received else "reset", True, err)
    if isinstance(e, UpstreamProtocolError):
        return _Attempt("reset", True, UpstreamError(str(e), source="upstream"))
    return None


def after_failure(
    ctx: RequestContext,
    up: Upstream,
    target: Target,
    a: _Attempt,
    attempt: int,
    latency: float,
    deadline: float,
) -> float:
    """Record a failed attempt; return the backoff before the next one, or raise its error
    when no retry is allowed."""
    up.record(target, False, latency, None, a.reason)
    if ctx.trace is not None:
        ctx.record("attempt", target.id, latency * 1000, a.reason)
    if (
        (a.sent and _body_used(ctx))
        or asyncio.get_running_loop().time() >= deadline
        or not up.may_retry(ctx, attempt, a.sent, a.reason)
    ):
        raise a.error from None
    return up.backoff(attempt)


def _body_used(ctx: RequestContext) -> bool:
    """Some of the request body was already read (it cannot be sent again)."""
    body = ctx.upstream_request.body
    return body is not None and (body.received > 0 or body.at_eof)


def retry_on_status(
    ctx: RequestContext, up: Upstream, status: int, attempt: int, deadline: float
) -> bool:
    """Whether a (recorded) response status calls for another attempt."""
    if status < 500 or str(status) not in up.config.retries.on:
        return False
    return (
        not _body_used(ctx)
        and asyncio.get_running_loop().time() < deadline
        and up.may_retry(ctx, attempt, True, str(status))
    )


async def begin_attempt(
    ctx: RequestContext,
    up: Upstream,
    rt: RouteRuntime,
    tracer: Tracer,
    exclude: set[Target],
    last_error: GatewayError | None,
    preset: Target | None = None,
) -> Target:
    """The prologue of every attempt, HTTP/1.1 and HTTP/2 alike: pick the target (or take
    ``preset``), run the ``on_upstream_request`` hooks and add the tracer's headers. With no
    target left, raises ``last_error`` (the previous attempt's failure) or a 503 naming the
    upstream. A hook that fails gives the pick back (nothing is recorded against the target)."""
    target = preset if preset is not None else up.pick(ctx, exclude)
    if target is None:
        if last_error is not None:
            raise last_error
        raise UnavailableError(
            f"no available target in upstream {up.name}",
            headers=[("retry-after", str(up.retry_after()))],
        )
    ctx.target = target
    chain = rt.chain
    if chain.on_upstream_request:
        try:
            await chain.run_upstream_request(ctx)
        except BaseException:
            up.release(target)
            raise
    if tracer.enabled:
        for k, v in tracer.start_attempt(ctx, target):
            ctx.upstream_request.headers.set(k, v)
    return target


def attempt_answered(
    ctx: RequestContext, up: Upstream, target: Target, tracer: Tracer, status: int, latency: float
) -> None:
    """The epilogue of an attempt that got a response head, HTTP/1.1 and HTTP/2 alike: its
    latency, the tracer's span, the target's outcome (a 5xx is a failure) and the trace."""
    ctx.upstream_latency = latency
    if tracer.enabled:
        tracer.end_attempt(ctx, status=status)
    up.record(target, status < 500, latency, status, None)
    if ctx.trace is not None:
        ctx.record("attempt", target.id, latency * 1000, str(status))


class Forwarder:
    """Sends ``ctx.upstream_request`` to ``rt.upstream`` with failover; returns the upstream
    response with a streaming body. The connection goes back to its pool when the body ends
    (``finish_exchange``)."""

    def __init__(self, graph: RuntimeGraph) -> None:
        self.graph = graph

    async def forward(
        self,
        ctx: RequestContext,
        rt: RouteRuntime,
        client: ClientConnection | None,
        resume: Resume | None = None,
    ) -> Response:
        """``resume`` carries on after attempts made elsewhere (the callback path)."""
        up = rt.upstream
        assert up is not None
        ctx.upstream_name = up.name
        loop = asyncio.get_running_loop()
        timeouts = rt.timeouts
        deadline = loop.time() + timeouts.total
        exclude: set[Target] = set()
        attempt = 0
        last_error: GatewayError | None = None
        stale_retried = False
        preset: Target | None = None
        if resume is not None:
            preset = resume.target
            if resume.error is not None:
                raise resume.error
            attempt, exclude, last_error = resume.attempt, resume.exclude, resume.last_error
            stale_retried = resume.stale_retried
            if resume.delay > 0:
                await asyncio.sleep(min(resume.delay, max(0.0, deadline - loop.time())))
        tracer = self.graph.tracer
        while True:
            attempt += 1
            ctx.attempt = attempt
            target = await begin_attempt(ctx, up, rt, tracer, exclude, last_error, preset)
            preset = None
            t0 = loop.time()
            target.in_flight += 1
            try:
                # ``retries.per_try_timeout`` bounds this attempt's wait for its head
                try_deadline = min(deadline, t0 + rt.try_timeout)
                resp = await self._exchange(ctx, rt, target, client, try_deadline)
            except _Attempt as a:
                target.in_flight -= 1
                if a.reason == "stale" and not stale_retried:
                    # a pooled connection the upstream closed as we reused it: not a failure
                    # of the target, and nothing was processed — one free retry
                    stale_retried = True
                    attempt -= 1
                    continue
                if tracer.enabled:
                    tracer.end_attempt(ctx, error=a.error)
                delay = after_failure(ctx, up, target, a, attempt, loop.time() - t0, deadline)
                exclude.add(target)
                last_error = a.error
                if delay > 0:
                    await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                continue
            except BaseException:
                # no outcome to record (client gone, body too large, a bug of ours): give
                # back the probe slot; nothing is blamed on the target
                target.in_flight -= 1
                up.release(target)
                raise
            status = resp.status
            attempt_answered(ctx, up, target, tracer, status, loop.time() - t0)
            if retry_on_status(ctx, up, status, attempt, deadline):
                self.finish_exchange(ctx, False)
                exclude.add(target)
                delay = up.backoff(attempt)
                if delay > 0:
                    await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                continue
            return resp

    async def _exchange(
        self,
        ctx: RequestContext,
        rt: RouteRuntime,
        target: Target,
        client: ClientConnection | None,
        deadline: float,
    ) -> Response:
        loop = asyncio.get_running_loop()
        ureq = ctx.upstream_request
        timeouts = rt.timeouts
        # typed locally: ``Target.pool`` is ``Any`` (see proxy/fast.py)
        pool: ConnectionPool = target.pool
        conn, reused = await _connection(pool, rt.upstream, target, timeouts.connect, deadline)
        fresh_tries = 1 if reused else 0
        while True:
            items = ureq.headers.raw()
            chunked = ureq.body is not None and ureq.content_length is None
            new_host = rt.upstream_host(ureq.host, target)
            if new_host is not None:
                items = [(k, v) for k, v in items if k != b"host"]
                items.insert(0, (b"host", new_host))
            head_only = ureq.method == "HEAD"
            stream = conn.begin(head_only, timeouts.read)
            target_str = ureq.path + ("?" + ureq.query.decode("latin-1") if ureq.query else "")
            try:
                head_bytes_ = build_request_head(ureq.method, target_str, items)
            except BaseException:
                conn.abort()  # a bug of ours: the connection is not leaked
                raise
            try:
                conn.write(head_bytes_)
            except UpstreamResetError:
                conn.abort()
                if fresh_tries:
                    # a pooled connection found closed before anything was written: another
                    # one (through the queue when the pool is at its limit), not an attempt
                    fresh_tries -= 1
                    conn, reused = await _connection(
                        pool, rt.upstream, target, timeouts.connect, deadline
                    )
                    continue
                raise _Attempt("reset", False, UpstreamError("upstream reset")) from None
            break
        conn.arm_read_timeout(deadline)
        if client is not None and ctx.request.version != "1.0":
            conn.informational = lambda h: _relay_informational(client, h)
        pump: asyncio.Task[None] | None = None
        body = ureq.body
        if body is not None:
            pump = loop.create_task(
                _pump_body(
                    conn,
                    body,
                    chunked,
                    client,
                    # ureq: a plugin that buffered the body has sent the 100 already
                    ureq.expect_continue and ctx.request.version != "1.0",
                    timeouts.write,
                    rt.max_body,
                )
            )
            # its failure is acted on through the head wait or ``finish_exchange``; one that
            # ends after both (the response relayed first) is still retrieved, not logged as
            # "Task exception was never retrieved"
            pump.add_done_callback(_retrieve)
        try:
            if pump is not None:
                head = await _head_or_pump_failure(conn, pump)
            else:
                head = await conn.read_head()
        except BaseException as e:
            # whatever went wrong, this exchange is over: stop the body and drop the socket
            _cancel(pump)
            conn.abort()
            a = classify_failure(e, reused and body is None and ureq.method in IDEMPOTENT)
            if a is None:
                raise
            raise a from e
        if head.status == 101 and not switch_allowed(
            ctx.request.upgrade, head.headers.get_raw(b"upgrade")
        ):
            # RFC 9110 §15.2.2: switching to a protocol the client did not ask for (or not to
            # the WebSocket asked for, http/upgrade.py); relaying it would leave the client and
            # the gateway speaking different protocols. Both connections end.
            _cancel(pump)
            conn.abort()
            ctx.request.keep_alive = False
            raise _Attempt(
                "reset",
                True,
                UpstreamError("upstream switched protocols unasked", source="upstream"),
            )
        headers = head.headers
        via = self.graph.via
        if head.special:
            headers = Headers(
                response_header_items(headers.raw(), head.status, via, connection=head.connection)
            )
        elif via is not None:
            headers.add_raw(b"via", via_value(None, via))
        resp = Response(
            status=head.status,
            headers=headers,
            body=stream,
            reason=head.reason,
            chunked=head.chunked,
            upstream=True,
        )
        ctx.exchange = Exchange(conn, pool, pump, head, target)
        return resp

    @staticmethod
    def finish_exchange(ctx: RequestContext, ok: bool) -> None:
        """Release ``ctx``'s exchange (``ok``: the body was read to the end); see
        :meth:`portway.proxy.exchange.Exchange.release`."""
        finish_exchange(ctx, ok)


async def _connection(
    pool: ConnectionPool,
    up: Upstream | None,
    target: Target,
    connect_timeout: float,
    deadline: float,
) -> tuple[UpstreamConnection, bool]:
    """A connection from ``pool`` and whether it was used before; a connect failure is a
    failed attempt, a full pool (``pool.max_connections``) the 503 of
    :func:`~portway.proxy.overload.overloaded`, which is no attempt at all."""
    try:
        return await pool.acquire(connect_timeout, deadline)
    except PoolOverflowError as e:
        raise overloaded(up.name if up is not None else "", target.id, e) from None
    except (OSError, TimeoutError) as e:
        kind = "timed out" if isinstance(e, TimeoutError) else "refused"
        raise _Attempt(
            "connect_error",
            False,
            UpstreamConnectError(f"upstream connect {kind}", source="upstream"),
        ) from None


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()


async def _head_or_pump_failure(conn: UpstreamConnection, pump: asyncio.Task[None]) -> ResponseHead:
    """Wait for the response head; fail early if sending the body failed."""
    head_task = asyncio.ensure_future(conn.read_head())
    done, _ = await asyncio.wait({head_task, pump}, return_when=asyncio.FIRST_COMPLETED)
    if head_task in done:
        return head_task.result()
    exc = pump.exception()
    if exc is not None:
        head_task.cancel()
        if isinstance(exc, GatewayError):
            raise exc
        if isinstance(exc, TimeoutError):
            raise ReadTimeoutError("upstream write timeout")
        if isinstance(exc, ConnectionError):
            # the upstream may have answered before reading the whole body
            try:
                return await asyncio.wait_for(head_task, 0.5)
            except Exception:
                raise UpstreamResetError("upstream closed while receiving the body") from exc
        raise exc
    return await head_task


def _relay_informational(client: ClientConnection, head: ResponseHead) -> None:
    if head.status == 103:
        with contextlib.suppress(ConnectionError):
            client.send_info(103, head.reason, informational_items(head.headers.raw()))

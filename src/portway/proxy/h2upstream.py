"""Forwarding to HTTP/2 upstreams (``protocol: h2c | h2 | auto``), gRPC included.

The failover loop is :class:`~portway.proxy.forward.Forwarder`'s, over the same
:class:`~portway.upstream.upstream.Upstream` contract (``pick`` → ``record``/``release``,
``in_flight``, ``may_retry``, ``backoff``), with HTTP/2's own safe-retry rule: a stream the
upstream never processed (REFUSED_STREAM, above a GOAWAY's last_stream_id) is sent again on
another attempt for any method, its body replayed from a small buffer (:class:`_Replay`).

The request body is pumped by its own task while the response streams back, so gRPC
client-, server- and bidi-streaming calls relay each message as it comes. The exchange is
``ctx.exchange`` (an :class:`H2Exchange`, the HTTP/2 side of ``proxy/exchange.py``) and is
released like the HTTP/1.1 one, by ``finish_exchange`` once the body is relayed or from the
handler's ``finally``: an upstream stream that is not over then is reset with CANCEL (the
client went away or the handler failed).

Deadline: the route's ``timeouts.total``, lowered by a gRPC client's ``grpc-timeout``; the
remaining time is forwarded as ``grpc-timeout``. When it passes, the upstream stream is
cancelled and a gRPC client gets ``DEADLINE_EXCEEDED`` (in the trailers if the response has
begun); an upstream stream that breaks mid-response ends a gRPC response with
``UNAVAILABLE`` trailers rather than a reset, so clients see a status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

from portway.errors import (
    GatewayError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeoutError,
)
from portway.http.body import BodyStream
from portway.http.exceptions import ClientDisconnectedError, PoolOverflowError
from portway.http.grpc_status import (
    DEADLINE_EXCEEDED,
    UNAVAILABLE,
    format_grpc_timeout,
    is_grpc_request,
    parse_grpc_timeout,
)
from portway.http.h2client import (
    AlpnMismatchError,
    H2Pool,
    H2Stream,
    H2UpstreamError,
    client_ssl_context,
)
from portway.http.headers import Headers
from portway.http.models import Response
from portway.pipeline.context import Releasable, RequestContext
from portway.proxy.forward import Forwarder, attempt_answered, begin_attempt
from portway.proxy.overload import overloaded
from portway.upstream.target import Target

if TYPE_CHECKING:
    from portway.http.server import ClientConnection
    from portway.runtime.graph import RouteRuntime, RuntimeGraph
    from portway.upstream.upstream import Upstream

log: Final = logging.getLogger("portway.proxy.h2")

#: request body bytes kept to resend a refused stream; a larger body that was already
#: partly sent is not retried
REPLAY_LIMIT: Final = 64 * 1024
#: RFC 9113 §8.2.2 connection-specific fields, and what the HTTP/1.1 framing left behind
_DROP: Final = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
        b"grpc-timeout",
    }
)


def uses_h2(up: Upstream) -> bool:
    """The route's upstream is spoken to over HTTP/2 (``auto`` needs an https target)."""
    p = up.protocol
    if p == "http1":
        return False
    if p == "auto":
        return any(t.scheme == "https" and not t.extra.get("h1_only") for t in up.targets)
    return True


def pool_of(target: Target, up: Upstream) -> H2Pool:
    """The target's HTTP/2 pool (made on first use, kept in ``target.extra``)."""
    pool = target.extra.get("h2pool")
    if not isinstance(pool, H2Pool) or pool.closed_pool:
        tls = None
        if up.protocol == "h2" or (up.protocol == "auto" and target.scheme == "https"):
            tls = client_ssl_context(["h2"] if up.protocol == "h2" else ["h2", "http/1.1"])
        pc = up.config.pool
        pool = H2Pool(
            target.host,
            target.port,
            tls,
            pc.idle_timeout,
            max_connections=pc.max_connections,
            queue_timeout=pc.queue_timeout,
            max_queue=pc.max_queue,
        )
        target.extra["h2pool"] = pool
    return pool


class _Failed(Exception):
    """An attempt failed; ``reason`` is a retry condition, ``sent`` whether it was processed."""

    def __init__(self, reason: str, sent: bool, error: GatewayError) -> None:
        self.reason = reason
        self.sent = sent
        self.error = error


class _Replay:
    """The client's request body, with what was read kept (up to :data:`REPLAY_LIMIT`) so a
    refused stream can be sent again."""

    def __init__(self, body: BodyStream | None) -> None:
        self.body = body
        self.kept: list[bytes] = []
        self.size = 0
        self.whole = True  # every byte read so far is kept
        #: the HTTP/1.1 client got its 100 Continue (once, whatever the retries)
        self.continued = False
        #: the last attempt's pump: a retry waits for it to stop reading the body
        self.pump: asyncio.Task[None] | None = None
        self.eof = body is None

    @property
    def replayable(self) -> bool:
        return self.whole

    async def chunks(self) -> AsyncIterator[bytes]:
        for c in list(self.kept):
            yield c
        body = self.body
        if body is None or self.eof:
            return
        while True:
            c = await body.read()
            if not c:
                self.eof = True
                return
            if self.whole:
                if self.size + len(c) > REPLAY_LIMIT:
                    self.whole = False
                    self.kept = []
                else:
                    self.kept.append(c)
                    self.size += len(c)
            yield c


class H2Exchange(Releasable):
    """One attempt's upstream stream, its body pump and deadline timer; released once. The
    HTTP/2 side of ``ctx.exchange`` (``proxy/exchange.py`` is the HTTP/1.1 side): whoever
    ends the request releases it through ``finish_exchange``, as for HTTP/1.1."""

    def __init__(
        self,
        stream: H2Stream,
        pump: asyncio.Task[None] | None,
        target: Target,
        deadline: float,
        grpc: bool,
    ) -> None:
        self.stream = stream
        self.pump = pump
        self.target = target
        self.grpc = grpc
        self.released = False
        #: the attempt succeeded and the exchange was handed to the request: releasing it
        #: ends the attempt's ``in_flight`` (failed attempts are counted down by the loop)
        self.owns_in_flight = False
        loop = stream.conn.loop
        self.timer: asyncio.TimerHandle | None = loop.call_at(deadline, self._deadline)

    def _deadline(self) -> None:
        self.timer = None
        st = self.stream
        if st.ended:
            return
        if self.grpc and st.head.done():
            # the response has begun: the reset below ends it with DEADLINE_EXCEEDED trailers
            st.fail_trailers = _status_trailers(DEADLINE_EXCEEDED, "deadline exceeded")
        elif not st.head.done():
            st.head.set_exception(TimeoutError())  # the head wait reports a timeout (504)
            st.head.exception()  # retrieved: the head wait may be over (its own timeout)
        else:
            st.body.set_exception(UpstreamTimeoutError("upstream timed out", source="upstream"))
        st.cancel()  # RST_STREAM(CANCEL) to the upstream
        _cancel(self.pump)

    def release(self, ok: bool = False) -> None:
        # ``ok`` changes nothing here: a stream that did not end is reset either way
        if self.released:
            return
        self.released = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        _cancel(self.pump)
        st = self.stream
        if not (st.ended and st.sent_end):
            st.cancel()  # RST_STREAM(CANCEL): the upstream stops working on it
        if self.owns_in_flight:
            self.target.in_flight -= 1


async def forward_h2(
    ctx: RequestContext, rt: RouteRuntime, graph: RuntimeGraph, client: ClientConnection
) -> Response:
    """Send ``ctx.upstream_request`` to ``rt.upstream`` over HTTP/2 with failover; return
    the response with a streaming body (or a bodiless one for a trailers-only answer)."""
    up = rt.upstream
    assert up is not None
    ctx.upstream_name = up.name
    loop = asyncio.get_running_loop()
    # the upstream request decides: a transcoded JSON request is a gRPC call upstream
    ureq = ctx.upstream_request
    grpc = is_grpc_request(ureq)
    budget = rt.total_timeout
    if grpc:
        gt = parse_grpc_timeout(ureq.headers.get_raw(b"grpc-timeout"))
        if gt is not None:
            budget = min(budget, gt)
    deadline = loop.time() + budget
    replay = _Replay(ureq.body)
    exclude: set[Target] = set()
    attempt = 0
    last_error: GatewayError | None = None
    refused_retried = False
    tracer = graph.tracer
    while True:
        attempt += 1
        ctx.attempt = attempt
        target = await begin_attempt(ctx, up, rt, tracer, exclude, last_error)
        t0 = loop.time()
        target.in_flight += 1
        try:
            resp = await _exchange(ctx, rt, graph, up, target, deadline, replay, grpc, client)
        except AlpnMismatchError:
            # ``auto``: this target speaks HTTP/1.1 only; the HTTP/1.1 forwarder takes over
            target.in_flight -= 1
            up.release(target)
            target.extra["h1_only"] = True
            return await Forwarder(graph).forward(ctx, rt, client)
        except (asyncio.CancelledError, GatewayError, ClientDisconnectedError):
            target.in_flight -= 1
            up.release(target)
            raise
        except _Failed as a:
            target.in_flight -= 1
            if a.reason == "refused" and not refused_retried:
                # GOAWAY / REFUSED_STREAM: the upstream did nothing with the stream (a graceful
                # shutdown or a full connection), not a failure of the target: one free retry
                refused_retried = True
                up.release(target)
                attempt -= 1
                continue
            latency = loop.time() - t0
            # a stream refused again counts like a connect failure (nothing was processed)
            reason = "connect_error" if a.reason == "refused" else a.reason
            if tracer.enabled:
                tracer.end_attempt(ctx, error=a.error)
            up.record(target, False, latency, None, reason)
            if ctx.trace is not None:
                ctx.record("attempt", target.id, latency * 1000, reason)
            exclude.add(target)
            last_error = a.error
            if (
                (a.sent and not replay.replayable)  # the body cannot be sent again whole
                or loop.time() >= deadline
                or not up.may_retry(ctx, attempt, a.sent, reason)
            ):
                raise a.error from None
            delay = up.backoff(attempt)
            if delay > 0:
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            continue
        attempt_answered(ctx, up, target, tracer, resp.status, loop.time() - t0)
        return resp


def _request_headers(
    ctx: RequestContext, rt: RouteRuntime, target: Target, remaining: float, grpc: bool
) -> list[tuple[bytes, bytes]]:
    ureq = ctx.upstream_request
    authority = rt.upstream_host(ureq.host, target) or ureq.headers.get_raw(b"host")
    if authority is None:  # (a Host field emptied by a hook)
        authority = target.host_value()
    path = ureq.path + ("?" + ureq.query.decode("latin-1") if ureq.query else "")
    out: list[tuple[bytes, bytes]] = [
        (b":method", ureq.method.encode("ascii")),
        (b":scheme", b"https" if target.scheme == "https" else b"http"),
        (b":authority", authority),
        (b":path", path.encode("latin-1")),
    ]
    for k, v in ureq.headers.raw():
        k = k.lower()
        if k not in _DROP:
            out.append((k, v))
    te = ctx.request.headers.get_raw(b"te")
    if grpc or (te is not None and b"trailers" in te.lower()):
        out.append((b"te", b"trailers"))
    if grpc:
        out.append((b"grpc-timeout", format_grpc_timeout(remaining)))
    return out


async def _exchange(
    ctx: RequestContext,
    rt: RouteRuntime,
    graph: RuntimeGraph,
    up: Upstream,
    target: Target,
    deadline: float,
    replay: _Replay,
    grpc: bool,
    client: ClientConnection,
) -> Response:
    loop = asyncio.get_running_loop()
    remaining = deadline - loop.time()
    if remaining <= 0:
        raise UpstreamTimeoutError("upstream timed out", source="upstream")
    headers = _request_headers(ctx, rt, target, remaining, grpc)
    has_body = replay.body is not None
    pool = pool_of(target, up)
    try:
        stream = await pool.open_stream(
            headers, not has_body, max(0.001, min(rt.timeouts.connect, remaining))
        )
    except AlpnMismatchError:
        raise
    except PoolOverflowError as e:
        raise overloaded(up.name, target.id, e) from None
    except (OSError, TimeoutError, H2UpstreamError) as e:
        kind = "timed out" if isinstance(e, TimeoutError) else "refused"
        raise _Failed(
            "connect_error", False, UpstreamConnectError(f"upstream connect {kind}")
        ) from None
    if grpc:
        stream.fail_trailers = _status_trailers(UNAVAILABLE, "upstream stream broke")
    pump: asyncio.Task[None] | None = None
    old = replay.pump
    if old is not None and not old.done():
        # a cancelled pump may still hold a chunk it read: let it finish keeping it
        await asyncio.wait({old})
    if has_body:
        # an HTTP/1.1 client waiting on Expect: 100-continue (HTTP/2 clients get theirs from
        # the h2 server when the body is first read; a plugin that buffered it sent it)
        ureq = ctx.upstream_request
        expect = ureq.expect_continue and ctx.request.version == "1.1" and not replay.continued
        replay.continued = replay.continued or expect
        pump = replay.pump = loop.create_task(_pump(stream, replay, client if expect else None))
        pump.add_done_callback(_retrieve)
    ex = H2Exchange(stream, pump, target, deadline, grpc)
    # grpc: the head of a client-streaming call may only come after the last message
    head_timeout = deadline - loop.time() if grpc else min(rt.read_timeout, deadline - loop.time())
    try:
        status, rheaders = await _await_head(stream, pump, head_timeout)
    except TimeoutError:
        ex.release()
        raise _Failed(
            "timeout", True, UpstreamTimeoutError("upstream timed out", source="upstream")
        ) from None
    except H2UpstreamError as e:
        ex.release()
        if not e.processed:
            if replay.replayable:
                raise _Failed("refused", False, UpstreamError(str(e))) from None
            raise UpstreamError(str(e), source="upstream") from None
        raise _Failed("reset", True, UpstreamError("upstream reset", source="upstream")) from None
    except BaseException:
        ex.release()
        raise
    via = graph.via
    if via is not None:
        rheaders.add_raw(b"via", b"2 " + via)
    ex.owns_in_flight = True
    ctx.exchange = ex
    if stream.ended and stream.body.at_eof and stream.body.trailers is None:
        # a HEADERS frame that ended the stream (gRPC trailers-only): nothing follows
        return Response(status, rheaders, b"", upstream=True)
    return Response(status, rheaders, stream.body, upstream=True)


async def _await_head(
    stream: H2Stream, pump: asyncio.Task[None] | None, timeout: float
) -> tuple[int, Headers]:
    """The response head; a failure to read the client's body (gone, too large) is raised
    as soon as it happens."""
    async with asyncio.timeout(max(0.0, timeout)):
        if pump is not None:
            waiters: set[asyncio.Future[Any]] = {stream.head, pump}
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if stream.head not in done and not pump.cancelled():
                exc = pump.exception()
                if exc is not None and not isinstance(exc, H2UpstreamError):
                    raise exc
        return await stream.head


async def _pump(stream: H2Stream, replay: _Replay, expecting: ClientConnection | None) -> None:
    """Send the request body (replayed part first) and end our side of the stream."""
    if expecting is not None:
        expecting.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        async for c in replay.chunks():
            await stream.send(c)
        await stream.send(b"", end=True)
    except H2UpstreamError:
        raise  # the head wait reports the stream's failure
    except BaseException:
        # the client's body failed (gone, too large, stalled): the upstream must not take
        # a truncated message as whole
        stream.cancel()
        raise


def _status_trailers(code: int, message: str) -> Headers:
    return Headers([(b"grpc-status", b"%d" % code), (b"grpc-message", message.encode())])


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()


__all__ = ["H2Exchange", "forward_h2", "pool_of", "uses_h2"]

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
from portway.http.forwarded import ForwardMemo
from portway.http.headers import HOP_BY_HOP, PLAIN_CONNECTION, Headers, value_tokens
from portway.http.memo import remember
from portway.http.models import Request, Response
from portway.http.upgrade import is_websocket
from portway.http.wire import append_fields, chunk, last_chunk
from portway.pipeline.context import RequestContext
from portway.upstream.target import Target

if TYPE_CHECKING:
    from portway.http.server import ClientConnection
    from portway.routing.router import RouteMatch
    from portway.runtime.graph import RouteRuntime, RuntimeGraph
    from portway.upstream.upstream import Upstream

log: Final = logging.getLogger("portway.proxy")

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
#: RFC 9110 §7.6.3 received-protocol of the client hop
_VIA_PROTO: Final = {"1.1": b"1.1 ", "1.0": b"1.0 ", "2": b"2 "}
#: RFC 9110 §9.2.2: only these may be resent automatically
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class _Attempt(Exception):
    """An attempt failed; ``reason`` is a retry condition, ``sent`` whether bytes went out."""

    def __init__(self, reason: str, sent: bool, error: GatewayError) -> None:
        self.reason = reason
        self.sent = sent
        self.error = error


#: Connection tokens that name no extra field to drop (the common "keep-alive" / "close")
_PLAIN_TOKENS: Final = frozenset({b"keep-alive", b"close"})
_UPGRADE_FIELDS: Final = frozenset({b"upgrade", b"connection"})
#: http2-settings: RFC 7540 §3.2.1 connection-specific, meaningful only with "Upgrade: h2c",
#: which is never forwarded (http/upgrade.py)
_ALWAYS_DROP: Final = HOP_BY_HOP | {
    b"expect",
    b"x-portway-debug",
    b"content-length",
    b"http2-settings",
}
_FORWARDED: Final = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"forwarded",
    }
)
_DROP_UNTRUSTED: Final = _ALWAYS_DROP | _FORWARDED
# fields the single pass below rewrites rather than copies
_REWRITTEN: Final = frozenset({b"x-forwarded-for", b"via"})
#: the relayed response's framing fields, which the gateway writes itself
FRAMING: Final = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_HOP_AND_FRAMING: Final = HOP_BY_HOP | FRAMING


def prepare_upstream_request(ctx: RequestContext, rt: RouteRuntime, graph: RuntimeGraph) -> None:
    """Build the upstream request in one pass over the client's fields: drop hop-by-hop ones
    (and those named in ``Connection``), add X-Forwarded-* and Via, set framing, apply
    strip_prefix/rewrite. Framing is fixed here: a plugin that replaces the body in
    ``on_upstream_request`` must call :func:`set_request_framing` again."""
    ureq = ctx.upstream_request
    ureq.headers = Headers(forward_header_items(ctx.request, ureq.headers.raw(), graph.via))
    set_request_framing(ureq)
    path, prefix = upstream_path(rt, ctx.match, ureq.path)
    ureq.path = path
    if prefix is not None:
        # Kong/Traefik convention: tell the upstream what was stripped (for absolute links)
        ureq.headers.set("x-forwarded-prefix", prefix)


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


class _Scan:
    """One pass over the client's fields (see :func:`_scan`): what is kept, and what the
    added fields depend on."""

    __slots__ = (
        "has_port",
        "has_real",
        "has_xfh",
        "has_xfp",
        "host",
        "kept",
        "prior",
        "upgrade",
        "via",
    )

    def __init__(self, kept: list[tuple[bytes, bytes]]) -> None:
        self.kept = kept
        self.upgrade: bytes | None = None
        self.prior: list[bytes] | None = None
        self.via: bytes | None = None
        self.host: bytes | None = None
        self.has_xfp = False
        self.has_xfh = False
        self.has_port = False
        self.has_real = False


def _scan(req: Request, raw: list[tuple[bytes, bytes]], new_host: bytes | None) -> _Scan:
    """The client's fields minus hop-by-hop ones (and those named in ``Connection``),
    Content-Length and, from untrusted peers, X-Forwarded-*; prior X-Forwarded-For and Via
    values set aside to be merged."""
    drop = _ALWAYS_DROP if req.trusted_peer else _DROP_UNTRUSTED
    sc = _Scan([] if new_host is None else [(b"host", new_host)])
    kept = sc.kept
    conn_value: bytes | None = None
    for kv in raw:
        k = kv[0]
        if k in drop:
            if k == b"connection":
                v = kv[1]
                conn_value = v if conn_value is None else conn_value + b", " + v
            elif k == b"upgrade":
                sc.upgrade = kv[1]
            continue
        if k in _REWRITTEN:
            v = kv[1]
            if k == b"via":
                sc.via = v if sc.via is None else sc.via + b", " + v
            else:
                if sc.prior is None:
                    sc.prior = []
                sc.prior.append(v)
            continue
        if k == b"host":
            sc.host = kv[1]
            if new_host is not None:
                continue
        elif k == b"x-forwarded-proto":
            sc.has_xfp = True
        elif k == b"x-forwarded-host":
            sc.has_xfh = True
        elif k == b"x-forwarded-port":
            sc.has_port = True
        elif k == b"x-real-ip":
            sc.has_real = True
        kept.append(kv)  # the client's own pair: no new tuple
    if conn_value is not None:
        named = value_tokens(conn_value)
        if named:
            sc.kept = [kv for kv in kept if kv[0] not in named]
    return sc


def _added(req: Request, sc: _Scan, via_name: bytes | None) -> list[tuple[bytes, bytes]]:
    """X-Forwarded-For/-Proto/-Host/-Port, X-Real-IP, Via (and the upgrade pair)."""
    out: list[tuple[bytes, bytes]] = []
    peer = req.peer_ip.encode()
    prior = sc.prior
    out.append((b"x-forwarded-for", b", ".join([*prior, peer]) if prior else peer))
    if not sc.has_xfp:
        out.append((b"x-forwarded-proto", b"https" if req.scheme == "https" else b"http"))
    if not sc.has_xfh and sc.host is not None:
        out.append((b"x-forwarded-host", sc.host))
    if not sc.has_port and req.server_port:
        out.append((b"x-forwarded-port", str(req.server_port).encode()))
    if not sc.has_real:
        out.append((b"x-real-ip", req.client_ip.encode()))
    via = sc.via
    if via_name is not None:
        mine = _VIA_PROTO.get(req.version, b"1.0 ") + via_name
        out.append((b"via", via + b", " + mine if via else mine))
    elif via is not None:
        out.append((b"via", via))
    if sc.upgrade is not None and req.upgrade:
        out.append((b"connection", b"upgrade"))
        out.append((b"upgrade", sc.upgrade))
    return out


def forward_header_items(
    req: Request,
    raw: list[tuple[bytes, bytes]],
    via_name: bytes | None,
    new_host: bytes | None = None,
) -> list[tuple[bytes, bytes]]:
    """The fields to send upstream, from the client's ``raw`` list: hop-by-hop fields (and
    those named in ``Connection``), Content-Length and, from untrusted peers, X-Forwarded-*
    dropped; X-Forwarded-For/-Proto/-Host/-Port, X-Real-IP and Via added. No framing.
    ``new_host`` replaces the client's Host (which still feeds X-Forwarded-Host), first."""
    sc = _scan(req, raw, new_host)
    items = sc.kept
    items.extend(_added(req, sc, via_name))
    return items


def forward_header_lines(
    req: Request,
    raw: list[tuple[bytes, bytes]],
    via_name: bytes | None,
    new_host: bytes | None,
    parts: list[bytes],
    memo: ForwardMemo | None = None,
) -> None:
    """:func:`forward_header_items` serialised: appends ``name: value CRLF`` pieces to
    ``parts`` (the task-free path's request head). ``memo``: the client connection's own
    memo of the added fields (see :class:`ForwardMemo`).

    The usual request (no Via, no forwarding fields to keep, no Upgrade, a plain Connection
    value) is written in one pass with no field list, and the added fields, which then
    depend only on the connection, Host and version, come from remembered bytes (bounded).
    Anything else is undone and written by the general :func:`_scan`."""
    start = len(parts)
    if new_host is not None:
        parts.append(b"host: ")
        parts.append(new_host)
        parts.append(b"\r\n")
    trusted = req.trusted_peer
    host: bytes | None = None
    plain = True
    for kv in raw:
        k = kv[0]
        if k in _LOOK:
            if k == b"host":
                host = kv[1]
                if new_host is not None:
                    continue
            elif k in _NOT_PLAIN or (trusted and k in _FORWARDED):
                plain = False
                break
            elif k == b"connection":
                if kv[1] not in PLAIN_CONNECTION:
                    plain = False
                    break
                continue
            else:
                continue  # hop-by-hop, Content-Length, Expect, untrusted X-Forwarded-*
        parts.append(k)
        parts.append(b": ")
        parts.append(kv[1])
        parts.append(b"\r\n")
    if not plain:
        del parts[start:]
        sc = _scan(req, raw, new_host)
        append_fields(parts, sc.kept)
        append_fields(parts, _added(req, sc, via_name))
        return
    if (
        memo is not None
        and memo.tail
        and memo.host == host
        and memo.version == req.version
        and memo.client_ip == req.client_ip
        and memo.via == via_name
    ):
        # the connection's peer, scheme and port are the same for all its requests
        parts.append(memo.tail)
        return
    key = (req.peer_ip, req.client_ip, req.scheme, req.server_port, req.version, host, via_name)
    tail = _TAILS.get(key)
    if tail is None:
        sc = _Scan([])  # a usual request: its Host is all the added fields depend on
        sc.host = host
        lines: list[bytes] = []
        append_fields(lines, _added(req, sc, via_name))
        tail = remember(_TAILS, key, b"".join(lines), 1024)
    parts.append(tail)
    if memo is not None:
        memo.tail = tail
        memo.host = host
        memo.version = req.version
        memo.client_ip = req.client_ip
        memo.via = via_name


#: fields :func:`forward_header_lines` looks at rather than copies
_LOOK: Final = _DROP_UNTRUSTED | _REWRITTEN | {b"host", b"close"}
#: fields that make a request not "usual" for :func:`forward_header_lines` ("close": a
#: field of that name goes when Connection says close, which the general path sorts out)
_NOT_PLAIN: Final = frozenset({b"via", b"upgrade", b"close"})


#: serialised added fields per (peer, client ip, scheme, port, version, Host, Via name)
_TAILS: Final[dict[tuple[str, str, str, int, str, bytes | None, bytes | None], bytes]] = {}


def set_request_framing(ureq: Request) -> None:
    """(Re)write Content-Length / Transfer-Encoding of the upstream request from its body."""
    h = ureq.headers
    raw = h.raw()
    if any(k == b"content-length" or k == b"transfer-encoding" for k, _ in raw):
        h.remove_many((b"content-length", b"transfer-encoding"))
    if ureq.body is not None:
        if ureq.content_length is not None:
            h.add_raw(b"content-length", str(ureq.content_length).encode())
        else:
            h.add_raw(b"transfer-encoding", b"chunked")
    elif ureq.method in ("POST", "PUT", "PATCH"):
        h.add_raw(b"content-length", b"0")


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
        client.write(_CONTINUE)
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


def add_response_framing(
    items: list[tuple[bytes, bytes]],
    req: Request,
    no_body: bool,
    content_length: bytes | None,
    keep: bool,
    length_sent: bool = False,
) -> tuple[str, bool]:
    """Append the framing fields of a relayed response to ``items``: its Content-Length when
    kept (``content_length``; not appended when ``length_sent``: the caller relays the
    upstream's own line), else chunked for HTTP/1.1 clients or close-delimited for 1.0,
    then Connection. Returns ``(mode, keep)``, mode one of none/length/chunked/close."""
    if no_body:
        mode = "none"
        if content_length is not None and not length_sent:
            items.append((b"content-length", content_length))
    elif content_length is not None:
        mode = "length"
        if not length_sent:
            items.append((b"content-length", content_length))
    elif req.version != "1.0":  # HTTP/2 streams take the chunked framing (and trailers)
        mode = "chunked"
        items.append((b"transfer-encoding", b"chunked"))
    else:
        mode = "close"
        keep = False
    add_connection_field(items, req, keep)
    return mode, keep


def add_connection_field(items: list[tuple[bytes, bytes]], req: Request, keep: bool) -> None:
    """``Connection: close`` exactly when the connection will close; ``keep-alive`` for a
    persistent HTTP/1.0 client, which would otherwise assume close."""
    if not keep:
        items.append((b"connection", b"close"))
    elif req.version == "1.0":
        items.append((b"connection", b"keep-alive"))


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


def response_header_items(
    raw: list[tuple[bytes, bytes]],
    status: int,
    via: bytes | None,
    drop_framing: bool = False,
    connection: bytes | None = None,
) -> list[tuple[bytes, bytes]]:
    """One pass over an upstream response's fields: drop hop-by-hop fields, those named in
    ``connection`` (the Connection values the parser gathered) and, with ``drop_framing``,
    :data:`FRAMING` (the caller writes its own); merge Via (not on a 101, which keeps
    Upgrade)."""
    switching = status == 101
    base = _HOP_AND_FRAMING if drop_framing else HOP_BY_HOP
    if (connection is None or connection in PLAIN_CONNECTION) and not switching:
        drop = base  # the common case ("Connection: keep-alive" or none): no set built
    else:
        tokens = value_tokens(connection) if connection is not None else set()
        drop = base if tokens <= _PLAIN_TOKENS else base | tokens
        if switching:
            drop = drop - _UPGRADE_FIELDS
    merge_via = via is not None and not switching
    prior: bytes | None = None
    kept: list[tuple[bytes, bytes]] = []
    for kv in raw:
        k = kv[0]
        if k in drop:
            continue
        if merge_via and k == b"via":
            v = kv[1]
            prior = v if prior is None else prior + b", " + v
            continue
        kept.append(kv)
    if merge_via:
        assert via is not None
        kept.append((b"via", prior + b", 1.1 " + via if prior else b"1.1 " + via))
    return kept


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
        chain = rt.chain
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
        while True:
            attempt += 1
            ctx.attempt = attempt
            if preset is not None:
                target: Target | None = preset
                preset = None
            else:
                target = up.pick(ctx, exclude)
            if target is None:
                if last_error is not None:
                    raise last_error
                raise UnavailableError(
                    f"no available target in upstream {up.name}",
                    headers=[("retry-after", str(up.retry_after()))],
                )
            ctx.target = target
            if chain.on_upstream_request:
                try:
                    await chain.run_upstream_request(ctx)
                except BaseException:
                    up.release(target)
                    raise
            tracer = self.graph.tracer
            if tracer.enabled:
                for k, v in tracer.start_attempt(ctx, target):
                    ctx.upstream_request.headers.set(k, v)
            t0 = loop.time()
            target.in_flight += 1
            try:
                # ``retries.per_try_timeout`` bounds this attempt's wait for its head
                try_deadline = min(deadline, t0 + rt.try_timeout)
                resp = await self._exchange(ctx, rt, target, client, try_deadline)
            except (asyncio.CancelledError, GatewayError):
                # no outcome to record (client gone, body too large): give back the probe slot
                target.in_flight -= 1
                up.release(target)
                raise
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
            latency = loop.time() - t0
            ctx.upstream_latency = latency
            status = resp.status
            if tracer.enabled:
                tracer.end_attempt(ctx, status=status)
            up.record(target, status < 500, latency, status, None)
            if ctx.trace is not None:
                ctx.record("attempt", target.id, latency * 1000, str(status))
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
        pool = target.pool
        conn = pool.acquire_idle()
        fresh_tries = 1 if conn is not None else 0
        reused = conn is not None
        while True:
            if conn is None:
                remaining = deadline - loop.time()
                try:
                    conn = await pool.connect(max(0.001, min(timeouts.connect, remaining)))
                except (OSError, TimeoutError) as e:
                    kind = "timed out" if isinstance(e, TimeoutError) else "refused"
                    raise _Attempt(
                        "connect_error",
                        False,
                        UpstreamConnectError(f"upstream connect {kind}", source="upstream"),
                    ) from None
            items = ureq.headers.raw()
            chunked = ureq.body is not None and ureq.content_length is None
            if rt.preserve_host is False:
                items = [(k, v) for k, v in items if k != b"host"]
                items.insert(0, (b"host", target.host_value()))
            head_only = ureq.method == "HEAD"
            stream = conn.begin(head_only, timeouts.read)
            target_str = ureq.path + ("?" + ureq.query.decode("latin-1") if ureq.query else "")
            try:
                conn.write(build_request_head(ureq.method, target_str, items))
            except UpstreamResetError:
                conn.abort()
                conn = None
                reused = False
                if fresh_tries:
                    fresh_tries -= 1
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
        if head.status == 101 and not (
            ctx.request.upgrade and is_websocket(head.headers.get_raw(b"upgrade"))
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
            headers.add_raw(b"via", b"1.1 " + via)
        resp = Response(
            status=head.status,
            headers=headers,
            body=stream,
            reason=head.reason,
            chunked=head.chunked,
            upstream=True,
        )
        ctx.extra["_exchange"] = (conn, pool, pump, head, target)
        return resp

    @staticmethod
    def finish_exchange(ctx: RequestContext, ok: bool) -> None:
        """Return the connection to its pool (``ok``: the body was read to the end)."""
        ex = ctx.extra.pop("_exchange", None)
        if ex is None:
            return
        conn, pool, pump, head, target = ex
        target.in_flight -= 1
        if pump is not None and (not pump.done() or pump.cancelled() or pump.exception()):
            # the request body was not all sent: the upstream still expects the rest, so
            # the connection can never carry another request
            pump.cancel()
            conn.abort()
            return
        if ok and head.keep_alive and conn.reusable:
            pool.release(conn)
        else:
            conn.abort() if not ok else conn.close()


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
        from portway.http.wire import head_bytes

        with contextlib.suppress(ConnectionError):
            client.write(head_bytes(103, head.reason, head.headers.raw()))

"""Aggregate routes: one client request fans out to several upstream calls, one JSON answer.

The handler runs the route's plugins once (``on_request`` before, ``on_response``/``on_log``
after, as for any route) and, where a plain route forwards to its upstream, calls
:meth:`AggregatePlan.run`, which produces the response.

- Every call is a sub-request sent by the ordinary :class:`~portway.proxy.forward.Forwarder`
  on a per-call :class:`RouteRuntime` built once with the graph, so it gets the upstream's
  balancer, health, breaker, retries, pool and timeouts. Its headers are those of the
  upstream request after the route's ``on_request`` hooks (identity fields set by auth
  plugins, ``X-Request-Id``, ``traceparent``), prepared like a proxied request (hop-by-hop
  removed, ``X-Forwarded-*``, ``Via``); validators, ranges and ``Accept-Encoding`` are not
  sent (the gateway must read plain JSON, whole).
- Calls run as asyncio tasks, all started at once; a call whose path reads another call's
  result (``{product.sku}``) awaits exactly that call. The aggregate ``timeout`` bounds the
  whole; a call's ``timeout`` bounds it (retries included).
- A failed, timed-out, non-2xx, non-JSON or oversized (above the route's ``max_body_bytes``
  or 8 MiB) call result is an error with a reason, never a crash. An optional call's error
  makes the answer partial (``on_partial``: status, a header, ``"_errors": {name: reason}``);
  a required call's error answers 502 (504 for a timeout) naming the call, at once (the
  other calls are cancelled).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import orjson

from portway.config.aggregate import PARAMS, Ref, Template
from portway.errors import GatewayError, UpstreamTimeoutError
from portway.http.body import BodyStream
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.pipeline.buffering import DEFAULT_MAX_BODY, buffer_request_body, is_json
from portway.pipeline.context import RequestContext
from portway.plugins._json import codec, paths
from portway.proxy.aggregate_fields import Shaping, deep_merge
from portway.proxy.forward import Forwarder, prepare_upstream_request

if TYPE_CHECKING:
    from portway.runtime.graph import RouteRuntime, RuntimeGraph

#: request fields a call never carries: the gateway reads the whole plain body itself
_NOT_SENT: Final = (
    b"content-length",
    b"transfer-encoding",
    b"expect",
    b"accept-encoding",
    b"if-none-match",
    b"if-match",
    b"if-modified-since",
    b"if-unmodified-since",
    b"if-range",
    b"range",
)
_WITH_BODY: Final = frozenset({"POST", "PUT", "PATCH"})
#: characters left as they are when a result value is put into a path or query
_SAFE: Final = "-._~"


class AggregateCallError(GatewayError):
    """A required call failed: 502 (504 when it timed out), naming the call in the body."""

    status = 502
    code = "aggregate_call_failed"

    def __init__(self, call: str, reason: str, timeout: bool) -> None:
        super().__init__(
            f"required call {call!r} failed: {reason}",
            status=504 if timeout else 502,
            code="aggregate_call_timeout" if timeout else "aggregate_call_failed",
            source="upstream",
        )
        self.call = call

    def body(self, request_id: str | None) -> bytes:
        return orjson.dumps(
            {
                "error": self.message,
                "code": self.code,
                "status": self.status,
                "call": self.call,
                "request_id": request_id,
            }
        )


@dataclass(frozen=True, slots=True)
class CallPlan:
    """One call, compiled with the graph."""

    name: str
    template: Template
    deps: tuple[str, ...]
    method: str
    #: the per-call route runtime the forwarder serves (upstream, timeouts, empty chain)
    rt: RouteRuntime
    timeout: float
    required: bool
    shaping: Shaping


@dataclass(frozen=True, slots=True)
class Outcome:
    value: Any = None
    error: str | None = None
    timed_out: bool = False
    exact: bool = False
    status: int = 0
    ms: float = 0.0


class AggregatePlan:
    """A route's aggregate: calls in dependency order plus the merge rules. Immutable; one
    per route per graph, shared by every request."""

    def __init__(
        self,
        calls: list[CallPlan],
        *,
        timeout: float,
        flat: bool,
        partial_status: int,
        partial_header: str,
        max_body: int | None,
    ) -> None:
        self.calls = tuple(calls)
        self.order = {c.name: i for i, c in enumerate(self.calls)}
        self.timeout = timeout
        self.flat = flat
        self.partial_status = partial_status
        self.partial_header = partial_header
        self.max_body = max_body if max_body is not None else DEFAULT_MAX_BODY
        self.sends_body = any(c.method in _WITH_BODY for c in calls)

    async def run(self, ctx: RequestContext, graph: RuntimeGraph) -> Response:
        """Run every call and build the merged response; raise :class:`AggregateCallError`
        when a required call fails."""
        body: bytes | None = None
        if self.sends_body:
            body = await buffer_request_body(ctx, self.max_body)
        results: dict[str, Outcome] = {}
        tasks: dict[str, asyncio.Task[Outcome]] = {}
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # in dependency order: a call's dependencies' tasks exist when it is created
        for c in sorted(self.calls, key=lambda c: _depth(c, self.calls)):
            deps = [tasks[d] for d in c.deps]
            tasks[c.name] = loop.create_task(self._call(ctx, graph, c, deps, body))
        by_task = {t: n for n, t in tasks.items()}
        pending: set[asyncio.Task[Outcome]] = set(tasks.values())
        try:
            while pending:
                left = self.timeout - (loop.time() - t0)
                if left <= 0:
                    break
                done, pending = await asyncio.wait(
                    pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                for t in done:
                    name = by_task[t]
                    out = t.result()
                    results[name] = out
                    c = self.calls[self.order[name]]
                    if out.error is not None and c.required:
                        raise AggregateCallError(name, out.error, out.timed_out)
        finally:
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        ms = round(self.timeout * 1000)
        for t in pending:
            name = by_task[t]
            if name not in results:
                results[name] = Outcome(error=f"aggregate timeout ({ms}ms)", timed_out=True)
                if self.calls[self.order[name]].required:
                    raise AggregateCallError(name, results[name].error or "", True)
        try:
            return self._merge(ctx, results)
        except RecursionError:
            # (orjson accepts 1024 levels; a deep merge of two such documents would not fit)
            raise GatewayError(
                "call results are nested too deeply to merge",
                status=502,
                code="aggregate_merge_failed",
                source="upstream",
            ) from None

    def _merge(self, ctx: RequestContext, results: dict[str, Outcome]) -> Response:
        doc: dict[str, Any] = {}
        errors: dict[str, str] = {}
        exact = False
        report: dict[str, Any] = {}
        for c in self.calls:  # config order: a later call wins a flat-merge conflict
            out = results[c.name]
            report[c.name] = {"status": out.status, "ms": out.ms, "error": out.error}
            if ctx.trace is not None:
                ctx.record("aggregate", c.name, out.ms, out.error or str(out.status))
            if out.error is not None:
                errors[c.name] = out.error
                continue
            exact = exact or out.exact
            value = out.value
            key = c.shaping.group
            if not self.flat:
                key = key or c.name
                cur = doc.get(key)
                if isinstance(cur, dict) and isinstance(value, dict):
                    deep_merge(cur, value)
                else:
                    doc[key] = value
            elif key is not None:
                deep_merge(doc, {key: value})
            elif isinstance(value, dict):
                deep_merge(doc, value)
            else:
                doc[c.name] = value
        ctx.extra["aggregate"] = report
        h = Headers()
        h.set("content-type", "application/json")
        status = 200
        if errors:
            doc["_errors"] = errors
            status = self.partial_status
            h.set(self.partial_header, "true")
            # a partial answer must not be replayed by a cache (ours or the client's)
            h.set("cache-control", "no-store")
        # ``upstream=True``: the merged document is content from upstreams (the cache stores
        # it like an upstream answer), not a gateway-made error
        return Response(status, h, codec.dumps(doc, exact), upstream=True)

    async def _call(
        self,
        ctx: RequestContext,
        graph: RuntimeGraph,
        c: CallPlan,
        deps: list[asyncio.Task[Outcome]],
        body: bytes | None,
    ) -> Outcome:
        done: dict[str, Outcome] = {}
        for name, t in zip(c.deps, deps, strict=True):
            out = await asyncio.shield(t)  # a cancelled dependant must not cancel its input
            if out.error is not None:
                return Outcome(error=f"not run: call {name!r} failed")
            done[name] = out
        try:
            target = _render(c.template, ctx, done)
        except LookupError as e:
            return Outcome(error=str(e))
        start = time.perf_counter()
        try:
            async with asyncio.timeout(c.timeout):
                out = await self._send(ctx, graph, c, target, body)
        except TimeoutError:
            out = Outcome(error=f"timeout ({round(c.timeout * 1000)}ms)", timed_out=True)
        except UpstreamTimeoutError as e:
            out = Outcome(error=f"timeout: {e.message}", timed_out=True)
        except GatewayError as e:
            out = Outcome(error=f"{e.code}: {e.message}")
        except (ConnectionError, OSError) as e:
            out = Outcome(error=f"connection failed: {e}")
        ms = round((time.perf_counter() - start) * 1000, 3)
        return Outcome(out.value, out.error, out.timed_out, out.exact, out.status, ms)

    async def _send(
        self,
        ctx: RequestContext,
        graph: RuntimeGraph,
        c: CallPlan,
        target: str,
        body: bytes | None,
    ) -> Outcome:
        sub = _sub_context(ctx, c, target, body)
        prepare_upstream_request(sub, c.rt, graph)
        resp = await Forwarder(graph).forward(sub, c.rt, None)
        ok = False
        try:
            data = await _read(resp, self.max_body)
            ok = True
        finally:
            Forwarder.finish_exchange(sub, ok)
        status = resp.status
        if not 200 <= status < 300:
            return Outcome(error=f"upstream answered {status}", status=status)
        if status == 204 or not data:
            return Outcome(None, status=status)
        ctype = resp.headers.get_raw(b"content-type")
        if not is_json(ctype):
            shown = ctype.decode("latin-1")[:60] if ctype else "none"
            return Outcome(error=f"non-JSON response (content-type {shown})", status=status)
        try:
            doc, exact = codec.loads(data)
        except codec.JsonCodecError:
            return Outcome(error="invalid JSON response", status=status)
        return Outcome(c.shaping.apply(doc), exact=exact, status=status)


class _TooLarge(GatewayError):
    status = 502
    code = "response_too_large"


async def _read(resp: Response, limit: int) -> bytes:
    body = resp.body
    if isinstance(body, bytes):
        if len(body) > limit:
            raise _TooLarge(f"response larger than {limit} bytes")
        return body
    declared = resp.headers.get_raw(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"response larger than {limit} bytes")
    try:
        return await body.read_all(limit)
    except GatewayError as e:  # PayloadTooLargeError from the bounded read
        if e.status == 413:
            raise _TooLarge(f"response larger than {limit} bytes") from None
        raise


def _depth(c: CallPlan, calls: tuple[CallPlan, ...]) -> int:
    by = {x.name: x for x in calls}
    seen: dict[str, int] = {}

    def d(x: CallPlan) -> int:
        if x.name not in seen:
            seen[x.name] = 1 + max((d(by[n]) for n in x.deps), default=0)
        return seen[x.name]

    return d(c)


def _scalar(value: Any, ref: Ref) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return quote(str(value), safe=_SAFE)
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value)
    ):
        return ",".join(quote(str(v), safe=_SAFE) for v in value)
    raise LookupError(f"{ref.text} is not a scalar or a list of scalars")


def _render(template: Template, ctx: RequestContext, done: dict[str, Outcome]) -> str:
    """The call's path and query; raise :class:`LookupError` naming a missing value."""
    out: list[str] = []
    params = ctx.params
    for part in template:
        if isinstance(part, str):
            out.append(part)
        elif part.source == PARAMS:
            key = str(part.path.last_key)
            if key not in params:
                raise LookupError(f"{part.text}: the route matched no parameter {key!r}")
            out.append(params[key])  # kept as routed (still percent-encoded)
        else:
            found = paths.select(done[part.source].value, part.path)
            if not found or found[0] is None:
                raise LookupError(f"{part.text}: not found in the result of {part.source!r}")
            out.append(_scalar(found[0], part))
    return "".join(out)


def _sub_context(
    ctx: RequestContext, c: CallPlan, target: str, body: bytes | None
) -> RequestContext:
    """A request for one call: the route's upstream request headers (after on_request), the
    client's addressing (for X-Forwarded-*), the call's method and target."""
    parent = ctx.upstream_request
    client = ctx.request
    headers = parent.headers.copy()
    headers.remove_many(_NOT_SENT)
    if c.method not in _WITH_BODY or body is None:
        headers.remove_many((b"content-type",))
        body = None
    path, _, query = target.partition("?")
    req = Request(
        method=c.method,
        path=path,
        query=query.encode("latin-1"),
        headers=headers,
        version="1.1",
        host=client.host,
        client_ip=client.client_ip,
        client_port=client.client_port,
        scheme=client.scheme,
        raw_target=target.encode("latin-1"),
        body=BodyStream.of(body) if body is not None else None,
        content_length=len(body) if body is not None else None,
        peer_ip=client.peer_ip,
        trusted_peer=client.trusted_peer,
        server_port=client.server_port,
    )
    sub = RequestContext(req, ctx.request_id)
    sub.match = ctx.match
    sub.consumer = ctx.consumer
    span = ctx.state.get(REQUEST_SPAN)
    if span is not None:
        sub.state[REQUEST_SPAN] = span  # each attempt becomes a child span of the request's
        sub.extra["_tracer"] = ctx.extra.get("_tracer")
    return sub


def _request_span_key() -> Any:
    from portway.observability import tracing

    return tracing._REQUEST_SPAN


REQUEST_SPAN: Final = _request_span_key()

"""Distributed tracing: a small facade over the OpenTelemetry SDK that the data plane calls.

Off by default. The data plane holds one :class:`Tracer` per runtime graph (``build_tracer``
returns the shared no-op :data:`NOOP_TRACER` when tracing is disabled, whose methods return at
once) and calls, per request::

    tracer.start_request(ctx)                    # after the head is parsed
    with tracer.phase(ctx, plugin.name, "on_request"): ...   # or start_phase/end_phase
    for h, v in tracer.start_attempt(ctx, target):  # per upstream attempt
        ctx.upstream_request.headers.set(h, v)
    tracer.end_attempt(ctx, status=…, error=…)
    tracer.end_request(ctx)                      # after the last byte (always)

When enabled, an incoming W3C ``traceparent``/``tracestate`` (or B3, if configured) is
continued, else a new trace starts; the request is a SERVER span, each plugin phase an INTERNAL
child, each upstream attempt a CLIENT child whose context is what ``start_attempt`` returns for
injection (replacing whatever the client sent). Sampling is parent-based with a ratio for new
traces; spans are exported over OTLP/HTTP (protobuf) in batches from the SDK's worker thread,
so exporting never blocks the event loop. With tracing disabled, trace headers from the client
pass through untouched.

The OpenTelemetry-backed tracer lives in :mod:`portway.observability.tracing_otel`, imported
by :func:`build_tracer` only when tracing is enabled: a worker without tracing does not load
OpenTelemetry.
"""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from portway.config.tracing import Propagation as Propagation
from portway.config.tracing import TracingConfig as TracingConfig
from portway.http.headers import Headers
from portway.pipeline.context import ContextKey

log = logging.getLogger("portway.tracing")

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from portway.pipeline.context import RequestContext


#: header names a tracer reads and writes; the data plane replaces them on upstream requests
PROPAGATION_HEADERS: dict[str, tuple[str, ...]] = {
    "tracecontext": ("traceparent", "tracestate"),
    "b3": ("b3",),
    "b3multi": ("x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"),
}


_REQUEST_SPAN: ContextKey[Any] = ContextKey("tracing.request_span")
_ATTEMPT_SPAN: ContextKey[Any] = ContextKey("tracing.attempt_span")
_NULL_CM: AbstractContextManager[None] = contextlib.nullcontext()


class Tracer:
    """The tracing facade; this base class is the disabled tracer (every call is a no-op).

    ``start_phase`` returns an opaque token for ``end_phase`` (``None`` when disabled);
    ``start_attempt`` returns ``(name, value)`` headers to *set* on the upstream request.
    None of the methods raise.
    """

    enabled: bool = False

    def start_request(self, ctx: RequestContext) -> None:
        return None

    def phase(self, ctx: RequestContext, plugin: str, phase: str) -> AbstractContextManager[None]:
        return _NULL_CM

    def start_phase(self, ctx: RequestContext, plugin: str, phase: str) -> Any:
        return None

    def end_phase(self, token: Any, error: BaseException | None = None) -> None:
        return None

    def start_attempt(self, ctx: RequestContext, target: Any) -> list[tuple[str, str]]:
        return []

    def end_attempt(
        self, ctx: RequestContext, status: int | None = None, error: BaseException | None = None
    ) -> None:
        return None

    def end_request(self, ctx: RequestContext) -> None:
        return None

    async def start(self) -> None:
        return None

    async def force_flush(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


NOOP_TRACER = Tracer()


def build_tracer(config: TracingConfig | None, exporter: SpanExporter | None = None) -> Tracer:
    """The tracer for ``config``: :data:`NOOP_TRACER` when disabled. ``exporter`` overrides
    the OTLP exporter (tests)."""
    if config is None or not config.enabled:
        return NOOP_TRACER
    # the OpenTelemetry API and SDK are imported only by a config that enables tracing
    from portway.observability.tracing_otel import OtelTracer

    return OtelTracer(config, exporter)


def _hex_id(v: str, width: int) -> int | None:
    v = v.strip().lower()
    if not v or len(v) > width or any(c not in "0123456789abcdef" for c in v):
        return None
    n = int(v, 16)
    return n or None


def parse_b3(headers: Headers) -> tuple[int, int, bool] | None:
    """``(trace_id, span_id, sampled)`` from B3 single (``b3``) or multi (``X-B3-*``) headers."""
    single = headers.get("b3")
    if single is not None:
        parts = single.strip().split("-")
        if len(parts) < 2:
            return None  # "0"/"1"/"d" alone carry only a sampling decision: start a new trace
        tid = _hex_id(parts[0], 32) if len(parts[0]) in (16, 32) else None
        sid = _hex_id(parts[1], 16) if len(parts[1]) == 16 else None
        if tid is None or sid is None:
            return None
        flag = parts[2] if len(parts) > 2 else ""
        return tid, sid, flag in ("1", "d")
    t = headers.get("x-b3-traceid")
    s = headers.get("x-b3-spanid")
    if t is None or s is None or len(t) not in (16, 32) or len(s) != 16:
        return None
    tid, sid = _hex_id(t, 32), _hex_id(s, 16)
    if tid is None or sid is None:
        return None
    sampled = (headers.get("x-b3-sampled") or "").strip().lower() in ("1", "true") or (
        headers.get("x-b3-flags") or ""
    ).strip() == "1"
    return tid, sid, sampled

"""Tracing: W3C/B3 continuation, span tree, propagation, sampling, real OTLP/HTTP export."""

from __future__ import annotations

import asyncio
import gzip

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.http.server import serve_simple
from portway.observability.tracing import (
    NOOP_TRACER,
    TracingConfig,
    build_tracer,
    parse_b3,
)
from portway.observability.tracing_otel import OtelTracer
from portway.upstream.upstream import make_target
from tests.helpers import free_port
from tests.observability.support import make_ctx

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def tracer(exporter: InMemorySpanExporter, **cfg: object) -> OtelTracer:
    t = build_tracer(
        TracingConfig.model_validate({"enabled": True, "schedule_delay": "10ms", **cfg}), exporter
    )
    assert isinstance(t, OtelTracer)
    return t


def run_request(t: OtelTracer, headers: list[tuple[str, str]], status: int = 200) -> dict[str, str]:
    ctx = make_ctx(headers=headers, status=None)
    t.start_request(ctx)
    with t.phase(ctx, "key_auth", "on_request"):
        pass
    tok = t.start_phase(ctx, "headers", "on_response")
    t.end_phase(tok)
    ctx.attempt = 1
    injected = dict(t.start_attempt(ctx, make_target("http://127.0.0.1:9000")))
    t.end_attempt(ctx, status=status)
    ctx.response = Response(status=status)
    t.end_request(ctx)
    return injected


def test_disabled_is_noop() -> None:
    assert build_tracer(None) is NOOP_TRACER
    assert build_tracer(TracingConfig()) is NOOP_TRACER
    ctx = make_ctx()
    NOOP_TRACER.start_request(ctx)
    with NOOP_TRACER.phase(ctx, "p", "on_request"):
        pass
    assert NOOP_TRACER.start_attempt(ctx, None) == []
    NOOP_TRACER.end_request(ctx)
    assert not NOOP_TRACER.enabled


async def test_continues_w3c_trace_and_builds_span_tree() -> None:
    exp = InMemorySpanExporter()
    t = tracer(exp)
    injected = run_request(
        t, [("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"), ("tracestate", "vendor=1")]
    )
    await t.aclose()
    spans = {s.name: s for s in exp.get_finished_spans()}
    assert set(spans) == {"GET /", "key_auth on_request", "headers on_response", "GET"}
    root = spans["GET /"]
    assert root.kind == SpanKind.SERVER
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert root.parent is not None and f"{root.parent.span_id:016x}" == PARENT_ID
    for name in ("key_auth on_request", "headers on_response", "GET"):
        assert spans[name].parent is not None
        assert spans[name].parent.span_id == root.context.span_id
        assert spans[name].context.trace_id == root.context.trace_id
    attempt = spans["GET"]
    assert attempt.kind == SpanKind.CLIENT
    assert attempt.attributes is not None and attempt.attributes["server.port"] == 9000
    assert root.attributes is not None and root.attributes["portway.route"] == "r"
    # the upstream sees the attempt span as its parent, with the caller's tracestate
    assert injected["traceparent"] == f"00-{TRACE_ID}-{attempt.context.span_id:016x}-01"
    assert injected["tracestate"] == "vendor=1"


async def test_starts_new_trace_and_marks_5xx() -> None:
    exp = InMemorySpanExporter()
    t = tracer(exp)
    injected = run_request(t, [], status=503)
    await t.aclose()
    root = next(s for s in exp.get_finished_spans() if s.kind == SpanKind.SERVER)
    assert root.parent is None
    assert root.status.status_code == StatusCode.ERROR
    assert injected["traceparent"].startswith(f"00-{root.context.trace_id:032x}-")


async def test_invalid_traceparent_starts_new_trace() -> None:
    exp = InMemorySpanExporter()
    t = tracer(exp)
    run_request(t, [("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")])
    run_request(t, [("traceparent", "garbage")])
    await t.aclose()
    roots = [s for s in exp.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert len(roots) == 2 and all(r.parent is None for r in roots)


async def test_sampling_ratio_zero_still_propagates() -> None:
    exp = InMemorySpanExporter()
    t = tracer(exp, sample_ratio=0.0)
    injected = run_request(t, [])
    # a sampled parent wins over the ratio (parent-based)
    run_request(t, [("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01")])
    await t.aclose()
    assert int(injected["traceparent"].rsplit("-", 1)[1], 16) & 1 == 0  # not sampled
    spans = exp.get_finished_spans()
    assert spans and all(f"{s.context.trace_id:032x}" == TRACE_ID for s in spans)


async def test_b3_single_and_multi() -> None:
    assert parse_b3(Headers.from_pairs([("b3", f"{TRACE_ID}-{PARENT_ID}-1")])) == (
        int(TRACE_ID, 16),
        int(PARENT_ID, 16),
        True,
    )
    short = Headers.from_pairs([("x-b3-traceid", "a3ce929d0e0e4736"), ("x-b3-spanid", PARENT_ID)])
    assert parse_b3(short) == (int("a3ce929d0e0e4736", 16), int(PARENT_ID, 16), False)
    assert parse_b3(Headers.from_pairs([("b3", "0")])) is None
    assert parse_b3(Headers.from_pairs([("b3", "zz-yy-1")])) is None
    exp = InMemorySpanExporter()
    t = tracer(exp, propagation=["tracecontext", "b3"])
    injected = run_request(t, [("b3", f"{TRACE_ID}-{PARENT_ID}-1")])
    await t.aclose()
    root = next(s for s in exp.get_finished_spans() if s.kind == SpanKind.SERVER)
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert injected["b3"].startswith(f"{TRACE_ID}-") and injected["b3"].endswith("-1")
    assert "traceparent" in injected


async def test_b3_ignored_unless_configured() -> None:
    exp = InMemorySpanExporter()
    t = tracer(exp)
    run_request(t, [("b3", f"{TRACE_ID}-{PARENT_ID}-1")])
    await t.aclose()
    root = next(s for s in exp.get_finished_spans() if s.kind == SpanKind.SERVER)
    assert root.parent is None


async def test_phase_error_recorded() -> None:
    exp = InMemorySpanExporter()
    t = tracer(exp)
    ctx = make_ctx()
    t.start_request(ctx)
    try:
        with t.phase(ctx, "jwt", "on_request"):
            raise ValueError("bad token")
    except ValueError:
        pass
    t.end_request(ctx)
    await t.aclose()
    span = next(s for s in exp.get_finished_spans() if s.name == "jwt on_request")
    assert span.status.status_code == StatusCode.ERROR


async def test_otlp_http_export_to_real_receiver() -> None:
    received: list[ExportTraceServiceRequest] = []
    got = asyncio.Event()

    async def receiver(req: Request) -> Response:
        body = await req.body.read_all(10 << 20) if req.body is not None else b""
        if req.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(body)
        received.append(msg)
        got.set()
        h = Headers.from_pairs([("content-type", "application/x-protobuf")])
        return Response(200, h, b"")

    port = free_port()
    server = await serve_simple(receiver, "127.0.0.1", port)
    try:
        t = build_tracer(
            TracingConfig.model_validate(
                {
                    "enabled": True,
                    "endpoint": f"http://127.0.0.1:{port}/v1/traces",
                    "schedule_delay": "50ms",
                    "headers": {"x-tenant": "t1"},
                    "service_name": "gw-test",
                }
            )
        )
        run_request(t, [("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01")])
        await asyncio.wait_for(got.wait(), 10)
        await t.aclose()
    finally:
        server.close()
    spans = [
        (sp, rs)
        for msg in received
        for rs in msg.resource_spans
        for ss in rs.scope_spans
        for sp in ss.spans
    ]
    assert len(spans) == 4
    res_attrs = {a.key: a.value.string_value for a in spans[0][1].resource.attributes}
    assert res_attrs["service.name"] == "gw-test"
    by_name = {sp.name: sp for sp, _ in spans}
    root = by_name["GET /"]
    assert root.trace_id.hex() == TRACE_ID and root.parent_span_id.hex() == PARENT_ID
    for name in ("key_auth on_request", "headers on_response", "GET"):
        assert by_name[name].parent_span_id == root.span_id
        assert by_name[name].trace_id == root.trace_id

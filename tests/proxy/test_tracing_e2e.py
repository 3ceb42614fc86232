"""Tracing through the real data plane, exported to a real OTLP/HTTP receiver."""

from __future__ import annotations

import asyncio

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.http.server import serve_simple
from tests.helpers import free_port, http_get, run_gateway, run_upstream, simple_config

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


async def test_request_plugin_and_attempt_spans_link_and_propagate() -> None:
    received: list[ExportTraceServiceRequest] = []
    got = asyncio.Event()

    async def receiver(req: Request) -> Response:
        body = await req.body.read_all(10 << 20) if req.body is not None else b""
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(body)
        received.append(msg)
        got.set()
        return Response(200, Headers.from_pairs([("content-type", "application/x-protobuf")]))

    port = free_port()
    otlp = await serve_simple(receiver, "127.0.0.1", port)
    try:
        async with run_upstream() as up:
            cfg = simple_config(
                up.url,
                plugins=[{"name": "headers", "config": {"response": {"set": {"x-t": "1"}}}}],
            )
            cfg["tracing"] = {
                "enabled": True,
                "endpoint": f"http://127.0.0.1:{port}/v1/traces",
                "schedule_delay": "50ms",
            }
            async with run_gateway(cfg) as gw:
                status, _, _ = await http_get(
                    gw.url + "/x", headers=[("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01")]
                )
                assert status == 200
                await asyncio.wait_for(got.wait(), 10)
            upstream_tp = up.requests[0].headers.get("traceparent")
    finally:
        otlp.close()
    spans = [
        sp for m in received for rs in m.resource_spans for ss in rs.scope_spans for sp in ss.spans
    ]
    by_kind = {sp.kind: sp for sp in spans}
    server = by_kind[2]  # SPAN_KIND_SERVER
    client = by_kind[3]  # SPAN_KIND_CLIENT
    assert server.trace_id.hex() == TRACE_ID
    assert server.parent_span_id.hex() == PARENT_ID
    assert client.parent_span_id == server.span_id
    phase = [sp for sp in spans if sp.name == "headers on_response"]
    assert phase and phase[0].parent_span_id == server.span_id
    assert upstream_tp is not None
    _, trace_id, parent, _ = upstream_tp.split("-")
    assert trace_id == TRACE_ID and parent == client.span_id.hex()

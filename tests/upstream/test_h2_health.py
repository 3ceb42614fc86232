"""Active health checks of HTTP/2 upstreams: a gRPC server (grpcio, h2c only) probed with
the standard gRPC health protocol stays healthy, turns unhealthy when it answers
NOT_SERVING or dies, and comes back; an HTTP/1.1 probe could never reach it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from portway.upstream.h2probe import _health_messages
from tests.helpers import free_port, run_gateway

SERVING, NOT_SERVING = 1, 2


class _HealthServer:
    """A real grpcio server whose Health/Check answers ``status`` (counts the checks)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.status = SERVING
        self.checks = 0
        self.server: Any = None

    async def start(self) -> None:
        request_cls, response_cls = _health_messages()

        async def check(raw: bytes, context: Any) -> bytes:
            self.checks += 1
            request_cls.FromString(raw)  # a well-formed HealthCheckRequest
            return bytes(response_cls(status=self.status).SerializeToString())

        handler = grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health",
            {
                "Check": grpc.unary_unary_rpc_method_handler(
                    check, request_deserializer=None, response_serializer=None
                )
            },
        )
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop(0)


async def _until(cond: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``cond`` (probes run every 100 ms) up to a bound meant for a loaded machine."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


def _config(port: int, grpc_service: str | None) -> dict[str, Any]:
    active: dict[str, Any] = {
        "path": "/healthz",
        "interval": "100ms",
        "timeout": "1s",
        "healthy_after": 1,
        "unhealthy_after": 1,
    }
    if grpc_service is not None:
        active["grpc_service"] = grpc_service
    return {
        "upstreams": {
            "g": {
                "protocol": "h2c",
                "targets": [{"url": f"http://127.0.0.1:{port}"}],
                "health": {"active": active},
            }
        },
        "routes": [{"name": "r", "match": {"paths": ["/helloworld.Greeter/"]}, "upstream": "g"}],
    }


async def test_grpc_health_protocol_follows_the_server() -> None:
    server = _HealthServer(free_port())
    await server.start()
    try:
        async with run_gateway(_config(server.port, "")) as gw:
            target = gw.worker.gateway.graph.upstreams["g"].targets[0]  # type: ignore[union-attr]
            await _until(lambda: server.checks >= 2 and target.healthy, "probed and healthy")
            server.status = NOT_SERVING
            await _until(lambda: not target.healthy, "NOT_SERVING marks it down")
            server.status = SERVING
            await _until(lambda: target.healthy, "SERVING brings it back")
            await server.stop()
            await _until(lambda: not target.healthy, "a dead server is down")
    finally:
        await server.stop()


async def test_a_plain_http2_probe_of_a_grpc_server_fails() -> None:
    # without grpc_service the probe is `GET /healthz` over HTTP/2, which grpcio resets: the
    # target is reported down (this is why gRPC upstreams set grpc_service)
    server = _HealthServer(free_port())
    await server.start()
    try:
        async with run_gateway(_config(server.port, None)) as gw:
            target = gw.worker.gateway.graph.upstreams["g"].targets[0]  # type: ignore[union-attr]
            await _until(lambda: not target.healthy, "GET over HTTP/2 is refused by grpcio")
    finally:
        await server.stop()


@pytest.mark.parametrize("service", ["", "helloworld.Greeter"])
def test_the_check_request_is_encoded_by_protobuf(service: str) -> None:
    request_cls, response_cls = _health_messages()
    raw = request_cls(service=service).SerializeToString()
    assert request_cls.FromString(raw).service == service
    assert response_cls.FromString(response_cls(status=SERVING).SerializeToString()).status == 1

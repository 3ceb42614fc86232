"""Gateway-made errors reach gRPC clients as gRPC statuses (trailers-only responses), and
upstream failures as UNAVAILABLE: auth, rate limit, no route, no upstream, a killed upstream."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from tests.helpers import free_port, run_gateway
from tests.proxy.grpc.grpc_support import EchoServer, Stubs, channel, echo_pb2, gateway_config

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    s = EchoServer().start()
    try:
        yield s
    finally:
        await asyncio.to_thread(s.stop)


def msg(**kw: Any) -> Any:
    return echo_pb2().Msg(**kw)


async def call_code(port: int, metadata: list[tuple[str, str]] | None = None) -> Any:
    with channel(port) as ch:
        try:
            await asyncio.to_thread(Stubs(ch).unary, msg(text="x"), metadata=metadata, timeout=10)
        except grpc.RpcError as e:
            return e.code(), e.details(), dict(e.trailing_metadata() or ())
    return grpc.StatusCode.OK, "", {}


async def test_missing_key_is_unauthenticated(echo: EchoServer) -> None:
    cfg = gateway_config(
        echo.url,
        route={"plugins": [{"name": "key_auth"}]},
        consumers=[{"username": "alice", "credentials": {"key_auth": [{"key": "alice-key"}]}}],
    )
    async with run_gateway(cfg) as gw:
        code, details, _ = await call_code(gw.port)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert details
        code, _, _ = await call_code(gw.port, [("x-api-key", "alice-key")])
        assert code == grpc.StatusCode.OK
    assert echo.calls == 1


async def test_rate_limited_is_resource_exhausted(echo: EchoServer) -> None:
    plugin = {"name": "rate_limit", "config": {"limits": [{"rate": 1, "per": "1h"}]}}
    async with run_gateway(gateway_config(echo.url, route={"plugins": [plugin]})) as gw:
        assert (await call_code(gw.port))[0] == grpc.StatusCode.OK
        code, _, trailers = await call_code(gw.port)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "retry-after" in trailers  # the 429's fields are kept


async def test_no_route_is_unimplemented(echo: EchoServer) -> None:
    cfg = gateway_config(echo.url, route={"match": {"paths": ["/other.Service/"]}})
    async with run_gateway(cfg) as gw:
        assert (await call_code(gw.port))[0] == grpc.StatusCode.UNIMPLEMENTED


async def test_upstream_down_is_unavailable() -> None:
    async with run_gateway(gateway_config(f"http://127.0.0.1:{free_port()}")) as gw:
        assert (await call_code(gw.port))[0] == grpc.StatusCode.UNAVAILABLE


async def test_gateway_error_is_one_trailers_only_headers_frame() -> None:
    """Byte-level: a single HEADERS frame with END_STREAM, :status 200, grpc-status 12."""
    cfg = gateway_config("http://127.0.0.1:1", route={"match": {"paths": ["/other.Service/"]}})
    async with run_gateway(cfg) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        c = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        c.initiate_connection()
        c.send_headers(
            1,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":authority", b"gw"),
                (b":path", b"/portway.test.Echo/Unary"),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
            ],
        )
        c.send_data(1, b"\x00\x00\x00\x00\x00", end_stream=True)
        writer.write(c.data_to_send())
        events: list[Any] = []
        async with asyncio.timeout(10):
            while not any(isinstance(e, h2.events.StreamEnded) for e in events):
                data = await reader.read(65536)
                assert data
                events += c.receive_data(data)
                writer.write(c.data_to_send())
        writer.close()
    stream = [e for e in events if getattr(e, "stream_id", 0) == 1]
    assert isinstance(stream[0], h2.events.ResponseReceived)
    assert stream[0].stream_ended is not None  # END_STREAM on the HEADERS frame itself
    assert not any(isinstance(e, h2.events.DataReceived) for e in stream)
    fields = dict(stream[0].headers)
    assert fields[b":status"] == b"200"
    assert fields[b"grpc-status"] == b"12"
    assert fields[b"content-type"] == b"application/grpc"
    assert fields[b"grpc-message"]


async def test_upstream_killed_mid_stream_is_unavailable() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.proxy.grpc.echo_server_main", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        assert int(line) == port
        async with run_gateway(gateway_config(f"http://127.0.0.1:{port}")) as gw:
            with channel(gw.port) as ch:
                stubs = Stubs(ch)

                def run() -> tuple[list[str], Any]:
                    got: list[str] = []
                    it = stubs.server_stream(msg(text="k", count=10_000, delay_ms=20), timeout=30)
                    try:
                        for m in it:
                            got.append(m.text)
                            if len(got) == 3:
                                proc.kill()  # SIGKILL: no GOAWAY, no RST_STREAM
                    except grpc.RpcError as e:
                        return got, e.code()
                    return got, grpc.StatusCode.OK

                got, code = await asyncio.to_thread(run)
    finally:
        proc.kill()
        proc.wait(10)
    assert got[:3] == ["k-0", "k-1", "k-2"]
    assert code == grpc.StatusCode.UNAVAILABLE


def _requests_total(route: str, status_class: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    from portway.observability.metrics import get_metrics

    body, _ = get_metrics().render()
    total = 0.0
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if (
                s.name == "portway_requests_total"
                and s.labels.get("route") == route
                and s.labels.get("status_class") == status_class
            ):
                total += s.value
    return total


async def test_grpc_calls_are_counted_in_metrics(echo: EchoServer) -> None:
    cfg = gateway_config(echo.url, route={"name": "grpc-metrics"})
    before_ok = _requests_total("grpc-metrics", "2xx")
    async with run_gateway(cfg) as gw:
        for _ in range(3):
            assert (await call_code(gw.port))[0] == grpc.StatusCode.OK
    assert _requests_total("grpc-metrics", "2xx") == before_ok + 3

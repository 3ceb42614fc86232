"""The official gRPC interop client cases through Portway's gRPC pass-through.

A grpcio client (another gRPC implementation than Portway's relay) runs each case of the
interop spec against ``grpc.testing.TestService`` on a real grpcio server, through a real
gateway with an ``h2c`` upstream: over cleartext HTTP/2 (prior knowledge) and over TLS
(ALPN ``h2``), on both HTTP/2 server engines (``PORTWAY_H2_ENGINE=nghttp2`` and ``h2``).
The ``direct`` path runs the same cases with no gateway: the control that shows a failure
through Portway is Portway's.

    PYTHONPATH=src python -m pytest -q tests/proxy/grpc/test_grpc_interop.py
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.proxy.grpc.interop_cases import CASES, WAIT
from tests.proxy.grpc.interop_support import PATHS, Clients, InteropServer, channel, target
from tests.proxy.grpc.interop_wire import frame, grpc_call


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("path", PATHS)
async def test_interop_case(
    path: str, case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = InteropServer().start()
    try:
        async with target(path, server, tmp_path, monkeypatch) as (port, ca_path):
            ca = Path(ca_path).read_bytes() if ca_path else None
            with channel(port, ca) as ch:
                clients = Clients(ch)
                await asyncio.wait_for(asyncio.to_thread(CASES[case], clients, server), WAIT * 2)
    finally:
        await asyncio.to_thread(server.stop)


WIRE_PATHS = ["direct", "h2c-nghttp2", "h2c-h2"]
GZIP_OK = [(b"grpc-accept-encoding", b"identity,deflate,gzip")]


@pytest.mark.parametrize("path", WIRE_PATHS)
async def test_compressed_message_flags_on_the_wire(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What grpcio does not show its caller: the server's ``grpc-encoding`` and each
    message's compressed flag reach the client as sent (server_compressed_unary and
    server_compressed_streaming), and a client's gzip message reaches the server whole
    (client_compressed_unary)."""
    server = InteropServer().start()
    m = server.messages
    try:
        async with target(path, server, tmp_path, monkeypatch) as (port, _):
            svc = "/grpc.testing.TestService/"
            for compressed in (True, False):
                req = m.SimpleRequest(
                    response_size=314159, response_compressed=m.BoolValue(value=compressed)
                )
                r = await grpc_call(
                    port, svc + "UnaryCall", frame(req.SerializeToString()), GZIP_OK
                )
                assert r.trailers.get(b"grpc-status") == b"0", r
                assert [f for f, _ in r.messages] == [int(compressed)]
                reply = m.SimpleResponse.FromString(r.messages[0][1])
                assert reply.payload.body == b"\x00" * 314159

            params = [
                m.ResponseParameters(size=31415, compressed=m.BoolValue(value=True)),
                m.ResponseParameters(size=92653, compressed=m.BoolValue(value=False)),
            ]
            req = m.StreamingOutputCallRequest(response_parameters=params)
            body = frame(req.SerializeToString())
            r = await grpc_call(port, svc + "StreamingOutputCall", body, GZIP_OK)
            assert r.trailers.get(b"grpc-status") == b"0", r
            assert r.headers.get(b"grpc-encoding") == b"gzip"
            assert [f for f, _ in r.messages] == [1, 0]
            sizes = [
                len(m.StreamingOutputCallResponse.FromString(b).payload.body) for _, b in r.messages
            ]
            assert sizes == [31415, 92653]

            req = m.SimpleRequest(response_size=10, payload=m.Payload(body=b"\x00" * 271828))
            body = frame(req.SerializeToString(), compress=True)
            r = await grpc_call(
                port, svc + "UnaryCall", body, [(b"grpc-encoding", b"gzip"), *GZIP_OK]
            )
            assert r.trailers.get(b"grpc-status") == b"0", r
            # the server decoded the 271828-byte payload (a gzip message it could not read
            # would be INTERNAL) and answered with the 10 bytes asked for
            assert len(m.SimpleResponse.FromString(r.messages[0][1]).payload.body) == 10
    finally:
        await asyncio.to_thread(server.stop)


@pytest.mark.parametrize("timeout", [b"1n", b"300m"])
@pytest.mark.parametrize("path", WIRE_PATHS)
async def test_expired_deadline_is_answered_with_a_status(
    path: str, timeout: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """timeout_on_sleeping_server as a client that does not enforce its own deadline sees
    it: the request stays open, the server never answers, and the call ends with
    DEADLINE_EXCEEDED in a response (trailers-only), not a bare RST_STREAM. ``1n`` has
    passed when the gateway reads it (the gateway answers), ``300m`` expires while the
    upstream holds the call (whichever of the gateway and the server sees it first)."""
    server = InteropServer().start()
    m = server.messages
    try:
        async with target(path, server, tmp_path, monkeypatch) as (port, _):
            req = m.StreamingOutputCallRequest(payload=m.Payload(body=b"\x00" * 27182))
            r = await grpc_call(
                port,
                "/grpc.testing.TestService/FullDuplexCall",
                frame(req.SerializeToString()),
                [(b"grpc-timeout", timeout)],
                end=False,
            )
    finally:
        await asyncio.to_thread(server.stop)
    status = r.trailers.get(b"grpc-status") or r.headers.get(b"grpc-status")
    assert status == b"4", r
    assert r.messages == []


@pytest.mark.parametrize("path", WIRE_PATHS)
async def test_status_while_the_request_is_open(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status_code_and_message on a duplex call the client has not half-closed: the
    server's trailers-only answer reaches the client (then the stream may be reset with
    NO_ERROR to stop the request body, never before the answer)."""
    server = InteropServer().start()
    m = server.messages
    try:
        async with target(path, server, tmp_path, monkeypatch) as (port, _):
            status = m.EchoStatus(code=2, message="test status message")
            req = m.StreamingOutputCallRequest(response_status=status)
            r = await grpc_call(
                port,
                "/grpc.testing.TestService/FullDuplexCall",
                frame(req.SerializeToString()),
                [],
                end=False,
            )
    finally:
        await asyncio.to_thread(server.stop)
    fields = {**r.headers, **r.trailers}
    assert fields.get(b"grpc-status") == b"2", r
    assert fields.get(b"grpc-message") == b"test status message"

"""HTTP/2 over TLS to upstreams: ALPN ``h2`` (``protocol: h2``), ``auto`` picking h2 or falling
back to HTTP/1.1. The upstream certificate is trusted through SSL_CERT_FILE (system trust
store semantics: the client context is ``ssl.create_default_context()``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portway.http.client import simple_request
from portway.http.models import Request, Response
from portway.http.server import serve_simple
from tests.helpers import free_port, run_gateway
from tests.proxy.grpc.grpc_support import EchoServer, Stubs, channel, echo_pb2, gateway_config


def self_signed(tmp: Path) -> tuple[bytes, bytes, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp / "ca.pem"
    path.write_bytes(cert_pem)
    (tmp / "key.pem").write_bytes(key_pem)
    return cert_pem, key_pem, path


class TlsEcho(EchoServer):
    def __init__(self, cert: bytes, key: bytes) -> None:
        super().__init__()
        self._server.stop(0)  # the parent's insecure port: replaced by a TLS one

        import grpc as g

        self._server = g.server(futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers((self._handlers(),))
        creds = g.ssl_server_credentials([(key, cert)])
        self.port = self._server.add_secure_port("127.0.0.1:0", creds)


@pytest.mark.parametrize("protocol", ["h2", "auto"])
async def test_grpc_to_a_tls_upstream_over_alpn_h2(
    protocol: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key, ca = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    s = TlsEcho(cert, key).start()
    try:
        cfg = gateway_config(f"https://127.0.0.1:{s.port}", upstream={"protocol": protocol})
        async with run_gateway(cfg) as gw:
            with channel(gw.port) as ch:
                stubs = Stubs(ch)

                def run() -> list[str]:
                    return [
                        stubs.unary(echo_pb2().Msg(text=str(i)), timeout=10).text for i in range(3)
                    ]

                assert await asyncio.to_thread(run) == ["echo:0", "echo:1", "echo:2"]
            pool = gw.gateway.graph.upstreams["greeter"].targets[0].extra["h2pool"]
            assert pool.opened == 1
    finally:
        await asyncio.to_thread(s.stop)
    assert len(s.peers) == 1


async def test_untrusted_upstream_certificate_is_unavailable(tmp_path: Path) -> None:
    cert, key, _ = self_signed(tmp_path)  # not trusted: verification must fail
    s = TlsEcho(cert, key).start()
    try:
        cfg = gateway_config(f"https://127.0.0.1:{s.port}", upstream={"protocol": "h2"})
        async with run_gateway(cfg) as gw:
            with channel(gw.port) as ch:
                with pytest.raises(grpc.RpcError) as ei:
                    await asyncio.to_thread(Stubs(ch).unary, echo_pb2().Msg(text="x"), timeout=10)
    finally:
        await asyncio.to_thread(s.stop)
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    assert s.calls == 0


async def test_auto_falls_back_to_http1_when_alpn_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, ca = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(str(ca), str(tmp_path / "key.pem"))
    sctx.set_alpn_protocols(["http/1.1"])
    seen: list[str] = []

    async def handler(req: Request) -> Response:
        seen.append(req.version)
        return Response.text(200, "h1 ok")

    port = free_port()
    server = await serve_simple(handler, "127.0.0.1", port, ssl=sctx)
    try:
        cfg: dict[str, Any] = {
            "upstreams": {
                "u": {"protocol": "auto", "targets": [{"url": f"https://127.0.0.1:{port}"}]}
            },
            "routes": [{"name": "r", "match": {"paths": ["/"]}, "upstream": "u"}],
        }
        async with run_gateway(cfg) as gw:
            for _ in range(2):
                r = await simple_request("GET", gw.url + "/x", timeout=10)
                assert r.status == 200 and r.body == b"h1 ok"
            t = gw.gateway.graph.upstreams["u"].targets[0]
            assert t.extra.get("h1_only") is True
    finally:
        server.close()
    assert seen == ["1.1", "1.1"]

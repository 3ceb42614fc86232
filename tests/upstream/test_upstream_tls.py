"""TLS to upstreams against a real TLS server started by the test: verification, SNI, mTLS,
connection reuse, session resumption, and the 502 of a failed verification."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.helpers import free_port, http_get, run_gateway
from tests.server.tls_kit import Pki


@dataclass
class TlsUpstream:
    url: str
    sni: list[str | None] = field(default_factory=list)
    #: one entry per TLS connection: (session_reused, client certificate CN or None)
    conns: list[tuple[bool, str | None]] = field(default_factory=list)
    requests: int = 0
    paths: list[str] = field(default_factory=list)


@asynccontextmanager
async def tls_upstream(
    cert: str, key: str, client_ca: str | None = None
) -> AsyncIterator[TlsUpstream]:
    """A keep-alive HTTP/1.1 server over TLS that answers every request with 200 JSON."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    port = free_port()
    up = TlsUpstream(f"https://127.0.0.1:{port}")
    ctx.sni_callback = lambda _obj, name, _ctx: up.sni.append(name)  # type: ignore[func-returns-value]

    async def conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        obj = w.get_extra_info("ssl_object")
        peer = obj.getpeercert()
        cn = dict(x[0] for x in peer["subject"])["commonName"] if peer else None
        up.conns.append((obj.session_reused, cn))
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                up.requests += 1
                up.paths.append(head.split(b" ")[1].decode())
                body = orjson.dumps({"client_cn": cn, "n": up.requests})
                w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                w.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                await w.drain()
                assert head
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(conn, "127.0.0.1", port, ssl=ctx)
    try:
        yield up
    finally:
        server.close()


def _cfg(url: str, tls: dict[str, Any] | None, **upstream: Any) -> dict[str, Any]:
    u: dict[str, Any] = {"targets": [{"url": url}], "retries": {"attempts": 1}, **upstream}
    if tls is not None:
        u["tls"] = tls
    return {
        "upstreams": {"payments": u},
        "routes": [{"name": "r", "match": {"paths": ["/"]}, "upstream": "payments"}],
    }


async def test_upstream_mtls_sni_reuse_and_session_resumption(tmp_path: Path) -> None:
    internal = Pki(tmp_path, "Internal CA")
    gw_clients = Pki(tmp_path, "Gateway Clients CA")
    cert, key = internal.leaf("payments.internal")
    gw_cert, gw_key = gw_clients.leaf("gw.internal", client=True)
    async with tls_upstream(cert, key, client_ca=gw_clients.ca_path) as up:
        tls = {
            "verify": True,
            "ca": internal.ca_path,
            "server_name": "payments.internal",
            "client_cert": gw_cert,
            "client_key": gw_key,
            "min_version": "1.2",
        }
        async with run_gateway(_cfg(up.url, tls)) as gw:
            for _ in range(3):
                status, _, body = await http_get(gw.url + "/pay")
                assert status == 200, body
                assert orjson.loads(body)["client_cn"] == "gw.internal"
            assert up.sni == ["payments.internal"]  # sent as SNI, verified as the name
            assert len(up.conns) == 1  # keep-alive: one TLS connection for three requests
        # no idle connections kept: every request opens a connection, resuming the session
        async with run_gateway(_cfg(up.url, tls, pool={"max_idle": 0})) as gw:
            for _ in range(3):
                status, _, _ = await http_get(gw.url + "/pay")
                assert status == 200
            fresh = up.conns[1:]
            assert len(fresh) == 3
            assert [reused for reused, _ in fresh] == [False, True, True]
        # without the client certificate the upstream refuses the handshake: 502
        no_cert = {k: v for k, v in tls.items() if k not in ("client_cert", "client_key")}
        async with run_gateway(_cfg(up.url, no_cert)) as gw:
            status, _, body = await http_get(gw.url + "/pay")
            assert status == 502


async def test_bad_upstream_certificate_is_a_502_with_a_logged_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    internal = Pki(tmp_path, "Internal CA")
    rogue = Pki(tmp_path, "Rogue CA")
    cert, key = rogue.leaf("payments.internal")
    caplog.set_level(logging.ERROR, "portway.upstream.tls")
    async with tls_upstream(cert, key) as up:
        tls = {"ca": internal.ca_path, "server_name": "payments.internal"}
        async with run_gateway(_cfg(up.url, tls)) as gw:
            status, headers, body = await http_get(gw.url + "/pay")
            assert status == 502
            assert headers.get("content-type") == "application/json"
            err = orjson.loads(body)
            assert err["status"] == 502 and "certificate" not in body.decode().lower()
            assert up.requests == 0
        logged = [r.getMessage() for r in caplog.records]
        assert any(
            "verification of upstream payments" in m and "unable to get local issuer" in m
            for m in logged
        ), logged
        # the right CA but the wrong name: also refused (the name is checked, not only the CA)
        good_cert, good_key = internal.leaf("other.internal", file="other")
    async with tls_upstream(good_cert, good_key) as up2:
        tls = {"ca": internal.ca_path, "server_name": "payments.internal"}
        async with run_gateway(_cfg(up2.url, tls)) as gw:
            status, _, _ = await http_get(gw.url + "/pay")
            assert status == 502
        assert any("Hostname mismatch" in r.getMessage() for r in caplog.records)
        # verify: false accepts it (an explicit opt-out)
        async with run_gateway(_cfg(up2.url, {"verify": False})) as gw:
            status, _, _ = await http_get(gw.url + "/pay")
            assert status == 200
        # and with no tls section at all, https targets are verified against system CAs
        async with run_gateway(_cfg(up2.url, None)) as gw:
            status, _, _ = await http_get(gw.url + "/pay")
            assert status == 502


async def test_active_health_checks_use_the_upstream_tls_settings(tmp_path: Path) -> None:
    internal = Pki(tmp_path, "Internal CA")
    gw_clients = Pki(tmp_path, "Gateway Clients CA")
    cert, key = internal.leaf("payments.internal")
    gw_cert, gw_key = gw_clients.leaf("gw.internal", client=True)
    async with tls_upstream(cert, key, client_ca=gw_clients.ca_path) as up:
        tls = {
            "ca": internal.ca_path,
            "server_name": "payments.internal",
            "client_cert": gw_cert,
            "client_key": gw_key,
        }
        health = {"active": {"interval": "50ms", "healthy_after": 1, "unhealthy_after": 1}}
        async with run_gateway(_cfg(up.url, tls, health=health)) as gw:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            # probes pass the private CA, the SNI name and the client certificate
            while up.paths.count("/healthz") < 3:
                assert loop.time() < deadline, up.paths
                await asyncio.sleep(0.05)
            status, _, _ = await http_get(gw.url + "/pay")
            assert status == 200

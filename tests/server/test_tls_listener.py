"""TLS listeners with real clients (``ssl``, curl): SNI, reload, versions, per-route mTLS."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any

import orjson
import pytest

from portway.server.tls import CERT_EXPIRY
from tests.helpers import run_gateway, run_upstream, simple_config
from tests.server.tls_kit import Pki, handshake

NAMES = ["a.example.com", "b.example.com", "c.example.com"]


def _verify_chain_only(pki: Pki) -> ssl.SSLContext:
    """Verifies the chain but not the name: what a test needs to see *which* cert came back."""
    ctx = pki.client_context()
    ctx.check_hostname = False
    return ctx


def _tls_config(up_url: str, tls: dict[str, Any], **route: Any) -> dict[str, Any]:
    cfg = simple_config(up_url, **route)
    cfg["listeners"] = [{"name": "public-tls", "tls": tls}]
    return cfg


async def https_get(
    port: int, path: str, ctx: ssl.SSLContext, host: str = "a.example.com"
) -> tuple[int, bytes]:
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host)
    try:
        w.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(r.read(), 10)
    finally:
        w.close()
    if not data:
        return 0, b""  # the server closed without an answer (a refused client certificate)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_sni_exact_wildcard_and_default(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    certs = [dict(zip(("cert", "key"), pki.leaf(n), strict=True)) for n in NAMES]
    certs.append(dict(zip(("cert", "key"), pki.leaf("*.api.example.com"), strict=True)))
    async with run_upstream() as up:
        async with run_gateway(_tls_config(up.url, {"certificates": certs})) as gw:
            ctx = _verify_chain_only(pki)
            for n in NAMES:
                sans, _ = await handshake(gw.port, n, ctx)
                assert sans == [n]
            sans, _ = await handshake(gw.port, "pay.api.example.com", ctx)
            assert sans == ["*.api.example.com"]
            # a wildcard covers one label only; unknown names and no SNI get the default
            for name in ("x.pay.api.example.com", "unknown.test", None):
                sans, _ = await handshake(gw.port, name, ctx)
                assert sans == ["a.example.com"], name
            # a real client: curl resolves the names to the listener and verifies them
            for host in ("b.example.com", "pay.api.example.com"):
                p = await asyncio.create_subprocess_exec(
                    "curl", "-s", "-m", "20", "--cacert", pki.ca_path,
                    "--resolve", f"{host}:{gw.port}:127.0.0.1",
                    f"https://{host}:{gw.port}/hello",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                out, err = await p.communicate()
                assert p.returncode == 0, err
                assert orjson.loads(out)["path"] == "/hello"


async def test_legacy_single_certificate_form(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com")
    async with run_upstream() as up:
        async with run_gateway(_tls_config(up.url, {"cert": cert, "key": key})) as gw:
            status, _ = await https_get(gw.port, "/x", pki.client_context())
            assert status == 200


def _client_hello_flight(
    ctx: ssl.SSLContext, name: str
) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return obj, inc, out


async def test_reload_swaps_certificates_without_dropping_handshakes(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com", file="served")
    ctx = pki.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the server's flight then awaits ours
    async with run_upstream() as up:
        cfg = _tls_config(up.url, {"certificates": [{"cert": cert, "key": key}]})
        async with run_gateway(cfg) as gw:
            # a keep-alive connection opened before the reload
            r0, w0 = await asyncio.open_connection(
                "127.0.0.1", gw.port, ssl=ctx, server_hostname="a.example.com"
            )
            # a handshake in progress: ClientHello sent, the server's answer received, our
            # Finished not yet sent when the certificate changes
            r1, w1 = await asyncio.open_connection("127.0.0.1", gw.port)
            obj, inc, out = _client_hello_flight(ctx, "a.example.com")
            w1.write(out.read())
            while not out.pending:
                inc.write(await asyncio.wait_for(r1.read(65536), 10))
                with pytest.raises(ssl.SSLWantReadError):
                    obj.do_handshake()

            # rotation: new files at the same paths, then a reload (as SIGHUP/--watch do)
            pki.leaf("a.example.com", "new.example.com", file="served")
            await gw.worker.gateway.apply(gw.worker.gateway.config)

            w1.write(out.read())  # our Finished, after the swap
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    inc.write(await asyncio.wait_for(r1.read(65536), 10))
            old_serial = obj.getpeercert()["serialNumber"]  # type: ignore[index]
            obj.write(b"GET /mid HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
            w1.write(out.read())
            plain = b""
            while b"\r\n\r\n" not in plain:
                data = await asyncio.wait_for(r1.read(65536), 10)
                assert data, "the in-progress handshake was dropped"
                inc.write(data)
                try:
                    while chunk := obj.read(65536):
                        plain += chunk
                except ssl.SSLWantReadError:
                    pass  # everything received so far is decrypted
                except ssl.SSLZeroReturnError:
                    break  # close_notify after the response
            assert plain.startswith(b"HTTP/1.1 200")
            w1.close()

            # the connection opened before the reload still serves
            w0.write(b"GET /old HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
            assert (await asyncio.wait_for(r0.read(), 10)).startswith(b"HTTP/1.1 200")
            w0.close()

            # and the next handshake gets the new certificate at once
            sans, _ = await handshake(gw.port, "new.example.com", pki.client_context())
            assert sans == ["a.example.com", "new.example.com"]
            _, w2 = await asyncio.open_connection(
                "127.0.0.1", gw.port, ssl=pki.client_context(), server_hostname="a.example.com"
            )
            assert w2.get_extra_info("ssl_object").getpeercert()["serialNumber"] != old_serial
            w2.close()


async def test_tls12_client_refused_by_tls13_listener(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com")
    tls = {"certificates": [{"cert": cert, "key": key}], "min_version": "1.3"}
    async with run_upstream() as up, run_gateway(_tls_config(up.url, tls)) as gw:
        old = pki.client_context()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await handshake(gw.port, "a.example.com", old)
        p = await asyncio.create_subprocess_exec(
            "curl", "-s", "-m", "20", "--cacert", pki.ca_path, "--tlsv1.2", "--tls-max", "1.2",
            "--resolve", f"a.example.com:{gw.port}:127.0.0.1", f"https://a.example.com:{gw.port}/",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await p.communicate()
        assert p.returncode == 35  # CURLE_SSL_CONNECT_ERROR: the handshake was refused
        modern = pki.client_context()
        _, w = await asyncio.open_connection(
            "127.0.0.1", gw.port, ssl=modern, server_hostname="a.example.com"
        )
        assert w.get_extra_info("ssl_object").version() == "TLSv1.3"
        w.close()


async def test_client_certificate_required_on_one_route_only(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    clients = Pki(tmp_path, "Clients CA")
    cert, key = pki.leaf("a.example.com")
    ccert, ckey = clients.leaf("robot.clients", client=True)
    tls = {
        "certificates": [{"cert": cert, "key": key}],
        "client_ca": clients.ca_path,
        "client_cert": "optional",
    }
    async with run_upstream() as up:
        cfg = _tls_config(up.url, tls)
        cfg["routes"] = [
            {"name": "private", "match": {"paths": ["/private"], "tls": {"client_cert": True}},
             "upstream": "u"},
            {"name": "public", "match": {"paths": ["/"]}, "upstream": "u"},
        ]  # fmt: skip
        async with run_gateway(cfg) as gw:
            anon = pki.client_context()
            status, _ = await https_get(gw.port, "/public", anon)
            assert status == 200
            status, body = await https_get(gw.port, "/private/x", anon)
            assert status == 403
            assert orjson.loads(body)["status"] == 403
            with_cert = pki.client_context(ccert, ckey)
            status, body = await https_get(gw.port, "/private/x", with_cert)
            assert status == 200 and orjson.loads(body)["path"] == "/private/x"
            # a certificate from another CA is refused in the handshake (TLS 1.3: the client
            # learns it on its first read), never passed on as an anonymous request
            rogue = Pki(tmp_path, "Rogue CA")
            rcert, rkey = rogue.leaf("robot.clients", client=True)
            try:
                status, _ = await https_get(gw.port, "/private/x", pki.client_context(rcert, rkey))
            except (ssl.SSLError, ConnectionError):
                status = 0
            assert status == 0
            assert len(up.requests) == 2


async def test_expiry_metric_and_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pki = Pki(tmp_path)
    soon, soon_key = pki.leaf("soon.example.com", days=(-80, 5))
    later, later_key = pki.leaf("later.example.com")
    tls = {"certificates": [{"cert": later, "key": later_key}, {"cert": soon, "key": soon_key}]}
    caplog.set_level(logging.WARNING, "portway.tls")
    async with run_upstream() as up, run_gateway(_tls_config(up.url, tls)) as gw:
        assert gw.port
        soon_at = CERT_EXPIRY.labels("public-tls", "soon.example.com")._value.get()
        later_at = CERT_EXPIRY.labels("public-tls", "later.example.com")._value.get()
        assert 4 * 86400 < soon_at - __import__("time").time() < 6 * 86400
        assert later_at > soon_at
    warned = [r.getMessage() for r in caplog.records if "expires in" in r.getMessage()]
    assert len(warned) == 1 and "soon.example.com" in warned[0]

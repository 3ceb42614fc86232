"""HTTP/3 (``listeners[].quic: true``) with a real aioquic client against a real gateway and a
real upstream: the same handler, plugins and answers as HTTP/1.1; Alt-Svc on the TCP
listener; config errors with lines; certificate reload; graceful GOAWAY at shutdown."""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from portway.config.loader import ConfigError, load_document
from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import run_gateway, run_upstream, simple_config
from tests.http.h3_kit import H3Response, h3_client
from tests.server.tls_kit import Pki

KEY = "alice-key-0123456789"


def _cfg(up_url: str, cert: str, key: str, quic: bool = True, **route: Any) -> dict[str, Any]:
    cfg = simple_config(up_url, **route)
    listener: dict[str, Any] = {"name": "pub", "tls": {"cert": cert, "key": key}}
    if quic:
        listener["quic"] = True
    cfg["listeners"] = [listener]
    return cfg


async def https(
    port: int,
    ctx: ssl.SSLContext,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
) -> H3Response:
    """One HTTP/1.1 request over TLS (Connection: close), parsed into the h3 kit's shape."""
    r, w = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="a.example.com"
    )
    lines = [f"{method} {path} HTTP/1.1", "Host: a.example.com", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    try:
        w.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = await asyncio.wait_for(r.read(), 20)
    finally:
        w.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *fields = head.split(b"\r\n")
    out = H3Response(status=int(status_line.split(b" ")[1]), body=rest)
    for f in fields:
        k, _, v = f.partition(b":")
        out.headers.append((k.strip().lower(), v.strip()))
    return out


#: fields that differ by protocol or by request: framing, the request id, the advertisement
_PER_HOP = {b"connection", b"transfer-encoding", b"x-request-id", b"alt-svc", b"content-length"}


def _comparable(r: H3Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return r.status, sorted(kv for kv in r.headers if kv[0] not in _PER_HOP), r.body


async def _fixed(req: Request) -> Response:
    """An upstream whose answer depends only on what a request means (method, path, query,
    body), not on the hop it came by."""
    body = await req.body.read_all() if req.body is not None else b""
    doc = {
        "method": req.method,
        "path": req.path,
        "query": req.query.decode(),
        "body": body.decode(),
    }
    h = Headers([(b"content-type", b"application/json"), (b"x-up", b"yes")])
    h.add_raw(b"cache-control", b"no-store")
    return Response(201 if req.method == "POST" else 200, h, orjson.dumps(doc))


async def test_get_and_post_equal_the_http11_answer(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com")
    async with run_upstream(_fixed) as up:
        async with run_gateway(_cfg(up.url, cert, key)) as gw:
            ctx = pki.client_context()
            async with h3_client(gw.port, pki.ca_path) as c:
                g3 = await c.request("GET", "/items/7?x=1&y=%20", headers=[("x-a", "b")])
                g1 = await https(gw.port, ctx, "GET", "/items/7?x=1&y=%20", headers=[("x-a", "b")])
                assert g3.status == 200
                assert orjson.loads(g3.body) == {
                    "method": "GET", "path": "/items/7", "query": "x=1&y=%20", "body": ""
                }  # fmt: skip
                assert _comparable(g3) == _comparable(g1)
                assert g3.header("content-length") == str(len(g3.body))

                payload = b"hello over quic " * 5000  # several DATA frames and packets
                p3 = await c.request(
                    "POST", "/submit", headers=[("content-length", str(len(payload)))],
                    body=payload,
                )  # fmt: skip
                p1 = await https(gw.port, ctx, "POST", "/submit", body=payload)
                assert p3.status == 201
                assert orjson.loads(p3.body)["body"] == payload.decode()
                assert _comparable(p3) == _comparable(p1)
            # what the upstream saw of the HTTP/3 request: the same request, Via says 3
            seen = [r for r in up.requests if r.method == "POST"]
            assert len(seen) == 2
            via3 = seen[0].headers.get("via")
            assert via3 is not None and via3.startswith("3 ")
            assert seen[0].headers.get("x-forwarded-proto") == "https"
            assert seen[0].headers.get("content-length") == str(len(payload))


async def test_upstream_headers_and_streamed_body_relayed(tmp_path: Path) -> None:
    """The default echo upstream: request fields reach it over HTTP/3 as over HTTP/1.1, and
    a body larger than aioquic's first windows comes back whole."""
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com")
    big = b"z" * (3 * 1024 * 1024)

    async def large(req: Request) -> Response:
        return Response(200, Headers([(b"content-type", b"application/octet-stream")]), big)

    async with run_upstream() as up, run_upstream(large) as up2:
        cfg = _cfg(up.url, cert, key)
        cfg["upstreams"]["big"] = {"targets": [{"url": up2.url}]}
        cfg["routes"].insert(0, {"name": "big", "match": {"paths": ["/big"]}, "upstream": "big"})
        async with run_gateway(cfg) as gw, h3_client(gw.port, pki.ca_path) as c:
            r = await c.request(
                "GET", "/echo", headers=[("x-custom", "1"), ("cookie", "a=1"), ("cookie", "b=2")]
            )
            assert r.status == 200
            fields = dict((k, v) for k, v in orjson.loads(r.body)["headers"])
            assert fields["x-custom"] == "1"
            assert fields["cookie"] == "a=1; b=2"  # crumbs joined for the HTTP/1.1 hop
            assert fields["host"] == "a.example.com"  # from :authority
            r = await c.request("GET", "/big", timeout=60)
            assert r.status == 200 and len(r.body) == len(big) and r.body == big


async def test_key_auth_applies_on_h3_as_on_http11(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com")
    async with run_upstream() as up:
        cfg = _cfg(up.url, cert, key, plugins=[{"name": "key_auth"}])
        cfg["consumers"] = [{"username": "alice", "credentials": {"key_auth": [{"key": KEY}]}}]
        async with run_gateway(cfg) as gw, h3_client(gw.port, pki.ca_path) as c:
            denied3 = await c.request("GET", "/private")
            denied1 = await https(gw.port, pki.client_context(), "GET", "/private")
            assert denied3.status == 401
            assert denied3.header("content-type") == "application/json"
            assert _comparable(denied3)[:2] == _comparable(denied1)[:2]
            e3, e1 = orjson.loads(denied3.body), orjson.loads(denied1.body)
            assert e3["error"] == e1["error"]
            ok = await c.request("GET", "/private", headers=[("apikey", KEY)])
            assert ok.status == 200
            sent = dict((k, v) for k, v in orjson.loads(ok.body)["headers"])
            assert "apikey" not in sent  # hide_credentials, as on HTTP/1.1
    assert len(up.requests) == 1


async def test_bad_requests_answered_on_the_stream(tmp_path: Path) -> None:
    """The HTTP/1.1 listener's rules (http/streamreq.py): 414, 431, CONNECT 501, 400 for a
    Host other than :authority or a method HTTP/1.1 refuses; the connection keeps serving."""
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com")
    async with run_upstream() as up:
        cfg = _cfg(up.url, cert, key)
        cfg["server"] = {"limits": {"max_uri_bytes": 256, "max_body_bytes": 1000}}
        async with run_gateway(cfg) as gw, h3_client(gw.port, pki.ca_path) as c:
            r = await c.request("GET", "/" + "a" * 300)
            assert r.status == 414 and orjson.loads(r.body)["code"] == "uri_too_long"
            r = await c.request("GET", "/x", headers=[("x-big", "v" * 40000)])
            assert r.status == 431
            r = await c.request(
                "POST", "/x", headers=[("content-length", "5000")], body=b"q" * 5000
            )
            assert r.status == 413
            r = await c.request("CONNECT", "/x")
            assert r.status == 501
            # a Host naming another entity than :authority; a method llhttp does not know
            r = await c.request("GET", "/x", headers=[("host", "evil.example.com")])
            assert r.status == 400 and orjson.loads(r.body)["code"] == "bad_request"
            r = await c.request("get", "/x")
            assert r.status == 400 and orjson.loads(r.body)["code"] == "bad_request"
            # the same host (case, the scheme's default port) passes
            r = await c.request("GET", "/same-host", headers=[("host", "A.example.com:443")])
            assert r.status == 200
            r = await c.request("GET", "/still-serving")
            assert r.status == 200
    assert [q.path for q in up.requests] == ["/same-host", "/still-serving"]


async def test_alt_svc_on_the_tcp_listener_only_with_quic(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com")
    async with run_upstream() as up:
        async with run_gateway(_cfg(up.url, cert, key)) as gw:
            r1 = await https(gw.port, pki.client_context(), "GET", "/a")
            assert r1.header("alt-svc") == f'h3=":{gw.port}"; ma=86400'
            # HTTP/2 over TLS (ALPN h2) carries it too: curl, a real h2 client
            p = await asyncio.create_subprocess_exec(
                "curl", "-s", "-m", "20", "--http2", "-D", "-", "-o", "/dev/null",
                "--cacert", pki.ca_path, "--resolve", f"a.example.com:{gw.port}:127.0.0.1",
                f"https://a.example.com:{gw.port}/b",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await p.communicate()
            assert p.returncode == 0, err
            head = out.decode().lower()
            assert head.startswith("http/2 200")
            assert f'alt-svc: h3=":{gw.port}"; ma=86400' in head
            # the HTTP/3 answer itself needs no advertisement
            async with h3_client(gw.port, pki.ca_path) as c:
                assert (await c.request("GET", "/c")).header("alt-svc") is None
        async with run_gateway(_cfg(up.url, cert, key, quic=False)) as gw:
            r1 = await https(gw.port, pki.client_context(), "GET", "/a")
            assert r1.status == 200 and r1.header("alt-svc") is None


async def test_quic_port_is_advertised(tmp_path: Path) -> None:
    import socket

    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        udp = s.getsockname()[1]
    async with run_upstream() as up:
        cfg = _cfg(up.url, cert, key)
        cfg["listeners"][0]["quic_port"] = udp
        async with run_gateway(cfg) as gw:
            r1 = await https(gw.port, pki.client_context(), "GET", "/a")
            assert r1.header("alt-svc") == f'h3=":{udp}"; ma=86400'
            async with h3_client(udp, pki.ca_path) as c:
                assert (await c.request("GET", "/q")).status == 200


def _only_error(text: str) -> tuple[str, int | None, str]:
    with pytest.raises(ConfigError) as info:
        load_document(textwrap.dedent(text), env={}, check_files=False)
    (issue,) = info.value.errors
    return issue.path, issue.line, issue.message


def test_quic_without_tls_is_a_config_error_with_its_line() -> None:
    path, line, message = _only_error(
        """\
        listeners:
          - name: plain
            address: 127.0.0.1:8080
            quic: true
        """
    )
    assert (path, line) == ("listeners[0].quic", 4)
    assert "quic: true needs tls" in message


def test_quic_with_required_client_certificates_is_refused() -> None:
    path, line, message = _only_error(
        """\
        listeners:
          - address: 127.0.0.1:8443
            tls:
              cert: server.pem
              key: server-key.pem
              client_ca: ca.pem
              client_cert: required
            quic: true
        """
    )
    assert (path, line) == ("listeners[0].quic", 8)
    assert "client_cert: required" in message


def test_quic_without_aioquic_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aioquic", None)  # import aioquic now raises ImportError
    path, line, message = _only_error(
        """\
        listeners:
          - address: 127.0.0.1:8443
            tls: {cert: server.pem, key: server-key.pem}
            quic: true
        """
    )
    assert (path, line) == ("listeners[0].quic", 4)
    assert "pip install 'portway[http3]'" in message


async def test_certificate_reload_reaches_new_quic_connections(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com", file="served")
    async with run_upstream() as up:
        async with run_gateway(_cfg(up.url, cert, key)) as gw:
            async with h3_client(gw.port, pki.ca_path, "a.example.com") as before:
                assert (await before.request("GET", "/1")).status == 200
                # b.example.com is not in the served certificate: verification fails
                with pytest.raises((ConnectionError, TimeoutError)):
                    async with h3_client(gw.port, pki.ca_path, "b.example.com"):
                        pass
                # rotation at the same paths, then a reload (as SIGHUP/--watch/admin do)
                pki.leaf("a.example.com", "b.example.com", file="served")
                await gw.worker.gateway.apply(gw.worker.gateway.config)
                async with h3_client(gw.port, pki.ca_path, "b.example.com") as after:
                    r = await after.request("GET", "/2", authority="b.example.com")
                    assert r.status == 200
                # the connection made before the reload keeps serving
                assert (await before.request("GET", "/3")).status == 200


async def test_graceful_stop_sends_goaway_and_finishes_in_flight(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com")
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(req: Request) -> Response:
        arrived.set()
        await release.wait()
        return Response(200, Headers([(b"content-type", b"text/plain")]), b"finished")

    caplog.set_level(logging.WARNING)
    async with run_upstream(slow) as up:
        cm = run_gateway(_cfg(up.url, cert, key))
        gw = await cm.__aenter__()
        stopped = False
        try:
            async with h3_client(gw.port, pki.ca_path) as c:
                inflight = c.start("GET", "/slow", "a.example.com")
                await asyncio.wait_for(arrived.wait(), 20)
                stop = asyncio.create_task(cm.__aexit__(None, None, None))
                stopped = True
                # GOAWAY names the first stream not served: the one after ours (id 0)
                assert await asyncio.wait_for(c.goaway, 20) == 4
                # a request after the GOAWAY is refused (H3_REQUEST_REJECTED), not served
                late = await c.request("GET", "/late")
                assert late.reset == 0x10B and late.status == 0
                release.set()
                done = await asyncio.wait_for(inflight, 20)
                assert (done.status, done.body) == (200, b"finished")
                # then the server closes the connection with H3_NO_ERROR
                assert await asyncio.wait_for(c.terminated, 20) == 0x100
                await asyncio.wait_for(stop, 30)
        finally:
            release.set()
            if not stopped:
                await cm.__aexit__(None, None, None)
    assert [r.path for r in up.requests] == ["/slow"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_client_reset_cancels_only_its_stream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """RESET_STREAM from the client cancels that request: the gateway hangs up on the
    upstream exchange it no longer needs; the connection's other streams are served."""
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com")
    arrived, gone = asyncio.Event(), asyncio.Event()
    paths: list[bytes] = []

    async def upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:  # one request per connection
            head = await r.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1]
            paths.append(path)
            if path == b"/hang":
                arrived.set()
                if await r.read() == b"":  # no answer: wait for the gateway to hang up
                    gone.set()
                return
            w.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n"
                b"connection: close\r\n\r\nok"
            )
            await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            w.close()

    caplog.set_level(logging.WARNING)
    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    up_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with run_gateway(_cfg(up_url, cert, key)) as gw:
            async with h3_client(gw.port, pki.ca_path) as c:
                hung = c.start("GET", "/hang", "a.example.com")
                await asyncio.wait_for(arrived.wait(), 20)
                # cancelling a request whose HEADERS already ended its side: STOP_SENDING
                # (RFC 9114 §4.1.1), with RESET_STREAM, both H3_REQUEST_CANCELLED
                c._quic.stop_stream(0, 0x10C)
                c._quic.reset_stream(0, 0x10C)
                c.transmit()
                await asyncio.wait_for(gone.wait(), 20)
                r = await c.request("GET", "/next")
                assert (r.status, r.body) == (200, b"ok")
                # aioquic answered the STOP_SENDING with RESET_STREAM: no response
                cancelled = await asyncio.wait_for(hung, 20)
                assert (cancelled.reset, cancelled.status) == (0x10C, 0)
    finally:
        server.close()
    assert paths == [b"/hang", b"/next"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_reload_applies_routes_to_h3_and_warns_on_quic_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload reaches HTTP/3 requests (new routes at once, on the open connection); the
    endpoint itself is static: turning quic off asks for a restart."""
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com")
    caplog.set_level(logging.WARNING)
    async with run_upstream() as up:
        cfg = _cfg(up.url, cert, key)
        async with run_gateway(cfg) as gw, h3_client(gw.port, pki.ca_path) as c:
            assert (await c.request("GET", "/v1/x")).status == 200
            cfg2 = _cfg(up.url, cert, key)
            cfg2["routes"][0]["match"] = {"paths": ["/v2"]}
            await gw.reload(cfg2)
            assert (await c.request("GET", "/v1/x")).status == 404
            assert (await c.request("GET", "/v2/x")).status == 200
            assert not [r for r in caplog.records if "needs a restart" in r.getMessage()]
            await gw.reload(_cfg(up.url, cert, key, quic=False))
            assert [
                r for r in caplog.records if "quic or quic_port needs a restart" in r.getMessage()
            ]
            assert (await c.request("GET", "/v1/x")).status == 200


async def test_sni_chooses_the_certificate_on_quic_as_on_tcp(tmp_path: Path) -> None:
    """Exact name, one-label wildcard, default: the TCP listener's choice, over QUIC. The
    client verifies the name, so a handshake succeeds only with the right certificate."""
    pki = Pki(tmp_path)
    certs = [
        dict(zip(("cert", "key"), pki.leaf(n), strict=True))
        for n in ("a.example.com", "b.example.com", "*.api.example.com")
    ]
    async with run_upstream() as up:
        cfg = simple_config(up.url)
        cfg["listeners"] = [{"name": "pub", "tls": {"certificates": certs}, "quic": True}]
        async with run_gateway(cfg) as gw:
            for name in ("a.example.com", "b.example.com", "pay.api.example.com"):
                async with h3_client(gw.port, pki.ca_path, name) as c:
                    r = await c.request("GET", "/sni", authority=name)
                    assert r.status == 200, name
                    sent = dict((k, v) for k, v in orjson.loads(r.body)["headers"])
                    assert sent["host"] == name
            # a name no certificate covers gets the default (a.example.com): not verifiable
            with pytest.raises((ConnectionError, TimeoutError)):
                async with h3_client(gw.port, pki.ca_path, "x.pay.api.example.com"):
                    pass

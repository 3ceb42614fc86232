"""HTTP/2 on the client side: h2c prior knowledge, ALPN h2 over TLS, flow control, errors.

Real clients only: ``curl`` (nghttp2) and the ``h2`` library driving a raw socket.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import http_get, raw_request, run_gateway, run_upstream, simple_config

#: every test runs on both HTTP/2 server engines (tests/http/conftest.py)
pytestmark = pytest.mark.usefixtures("h2_engine")

BIG = 20 * 1024 * 1024


async def curl(*args: str) -> tuple[int, bytes, bytes]:
    p = await asyncio.create_subprocess_exec(
        "curl",
        "-s",
        "-m",
        "20",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await p.communicate()
    assert p.returncode is not None
    return p.returncode, out, err


def split_head(out: bytes) -> tuple[bytes, bytes]:
    head, _, body = out.partition(b"\r\n\r\n")
    return head, body


class H2Client:
    """A minimal HTTP/2 client over a real socket, for what curl cannot show."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.responses: dict[int, dict[str, Any]] = {}
        self.events: list[Any] = []
        self.closed = False

    @classmethod
    async def open(cls, port: int) -> H2Client:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        c = cls(r, w)
        await c.flush()
        return c

    async def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()

    def request(self, method: str, path: str, body: bytes | None = None) -> int:
        sid = self.conn.get_next_available_stream_id()
        hdrs = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":scheme", b"http"),
            (b":authority", b"example.test"),
        ]
        self.conn.send_headers(sid, hdrs, end_stream=body is None)
        self.responses[sid] = {"status": None, "body": bytearray(), "done": False, "reset": None}
        return sid

    async def send_body(self, sid: int, body: bytes) -> None:
        view = memoryview(body)
        while view:
            window = min(
                self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                await self.pump_once()
                continue
            self.conn.send_data(sid, bytes(view[:window]))
            view = view[window:]
            await self.flush()
        self.conn.end_stream(sid)
        await self.flush()

    async def pump_once(self) -> None:
        data = await asyncio.wait_for(self.reader.read(65536), 10)
        if not data:
            self.closed = True
            return
        for ev in self.conn.receive_data(data):
            self.events.append(ev)
            sid = getattr(ev, "stream_id", None)
            r = self.responses.get(sid) if sid else None
            if isinstance(ev, h2.events.ResponseReceived) and r is not None:
                r["status"] = int(dict(ev.headers)[b":status"])
                r["headers"] = ev.headers
            elif isinstance(ev, h2.events.DataReceived) and r is not None:
                r["body"] += ev.data
                # credit is returned only after "processing": the server must respect it
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and r is not None:
                r["done"] = True
            elif isinstance(ev, h2.events.StreamReset) and r is not None:
                r["reset"] = ev.error_code
                r["done"] = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.closed = True
        await self.flush()

    async def wait(self, *sids: int) -> None:
        while not all(self.responses[s]["done"] for s in sids) and not self.closed:
            await self.pump_once()

    def close(self) -> None:
        self.writer.close()


def _self_signed(tmp: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    c, k = tmp / "cert.pem", tmp / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(c), str(k)


async def _upstream(req: Request) -> Response:
    if req.path == "/big":
        return Response(200, Headers([(b"content-type", b"application/octet-stream")]), BIG_BODY)
    body = await req.body.read_all() if req.body is not None else b""
    return Response.json(
        200,
        {
            "method": req.method,
            "path": req.path,
            "query": req.query.decode(),
            "headers": [[k, v] for k, v in req.headers],
            "len": len(body),
            "sha": hashlib.sha256(body).hexdigest(),
            "body": body[:64].decode("latin-1"),
        },
    )


BIG_BODY = bytes(range(256)) * (BIG // 256)


async def test_curl_prior_knowledge_get_post_head_and_404() -> None:
    cfg = simple_config("{up}")
    async with run_upstream(_upstream) as up:
        cfg["upstreams"]["u"]["targets"][0]["url"] = up.url
        cfg["routes"][0]["match"] = {"paths": ["/api"]}
        async with run_gateway(cfg) as gw:
            rc, out, _ = await curl("--http2-prior-knowledge", "-i", gw.url + "/api/a?x=1")
            head, body = split_head(out)
            assert rc == 0 and head.startswith(b"HTTP/2 200")
            data = orjson.loads(body)
            assert data["path"] == "/api/a" and data["query"] == "x=1"
            hdrs = dict(data["headers"])
            assert hdrs["via"] == "2 portway"
            assert hdrs["host"] == f"127.0.0.1:{gw.port}"

            rc, out, _ = await curl(
                "--http2-prior-knowledge", "-i", "-d", "hello", gw.url + "/api/p"
            )
            head, body = split_head(out)
            assert head.startswith(b"HTTP/2 200")
            data = orjson.loads(body)
            assert data["method"] == "POST" and data["body"] == "hello" and data["len"] == 5

            rc, out, _ = await curl("--http2-prior-knowledge", "-I", gw.url + "/api/h")
            assert rc == 0 and out.startswith(b"HTTP/2 200")
            assert b"content-length:" in out.lower()

            rc, out, _ = await curl("--http2-prior-knowledge", "-i", gw.url + "/nothing")
            head, body = split_head(out)
            assert head.startswith(b"HTTP/2 404")
            assert orjson.loads(body)["status"] == 404
            assert b"connection:" not in head.lower()

            # the same listener still speaks HTTP/1.1
            status, _, body = await http_get(gw.url + "/api/one")
            assert status == 200 and orjson.loads(body)["path"] == "/api/one"


async def test_many_concurrent_streams_on_one_connection() -> None:
    async with run_upstream(_upstream) as up, run_gateway(simple_config(up.url)) as gw:
        c = await H2Client.open(gw.port)
        try:
            sids = [c.request("GET", f"/s/{i}") for i in range(60)]
            await c.flush()
            await c.wait(*sids)
            for i, sid in enumerate(sids):
                r = c.responses[sid]
                assert r["status"] == 200
                assert orjson.loads(bytes(r["body"]))["path"] == f"/s/{i}"
        finally:
            c.close()


async def test_large_download_respects_flow_control() -> None:
    async with run_upstream(_upstream) as up, run_gateway(simple_config(up.url)) as gw:
        c = await H2Client.open(gw.port)
        try:
            # default 64 KiB windows: the server must wait for our WINDOW_UPDATEs
            sid = c.request("GET", "/big")
            small = c.request("GET", "/small")
            await c.flush()
            await c.wait(sid, small)
            r = c.responses[sid]
            assert r["status"] == 200 and r["reset"] is None
            assert len(r["body"]) == BIG
            assert hashlib.sha256(r["body"]).digest() == hashlib.sha256(BIG_BODY).digest()
            assert c.responses[small]["status"] == 200
        finally:
            c.close()


async def test_large_upload() -> None:
    payload = bytes(range(251)) * (8 * 1024 * 1024 // 251)
    async with run_upstream(_upstream) as up, run_gateway(simple_config(up.url)) as gw:
        c = await H2Client.open(gw.port)
        try:
            sid = c.request("POST", "/up", payload)
            await c.flush()
            await c.send_body(sid, payload)
            await c.wait(sid)
            data = orjson.loads(bytes(c.responses[sid]["body"]))
            assert data["len"] == len(payload)
            assert data["sha"] == hashlib.sha256(payload).hexdigest()
        finally:
            c.close()


async def test_curl_large_upload_and_download() -> None:
    async with run_upstream(_upstream) as up, run_gateway(simple_config(up.url)) as gw:
        rc, out, _ = await curl("--http2-prior-knowledge", gw.url + "/big")
        assert rc == 0 and len(out) == BIG
        p = await asyncio.create_subprocess_exec(
            "curl", "-s", "-m", "20", "--http2-prior-knowledge", "--data-binary", "@-",
            gw.url + "/up", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        payload = b"z" * (3 * 1024 * 1024)
        out, _ = await p.communicate(payload)
        assert orjson.loads(out)["len"] == len(payload)


async def test_tls_alpn_h2(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    async with run_upstream(_upstream) as up:
        cfg = simple_config(up.url)
        cfg["listeners"] = [{"name": "tls", "tls": {"cert": cert, "key": key}}]
        async with run_gateway(cfg) as gw:
            url = f"https://127.0.0.1:{gw.port}/t"
            rc, out, _ = await curl("-k", "--http2", "-i", url)
            head, body = split_head(out)
            assert rc == 0 and head.startswith(b"HTTP/2 200"), out[:200]
            data = orjson.loads(body)
            assert dict(data["headers"])["x-forwarded-proto"] == "https"
            rc, out, _ = await curl("-k", "--http1.1", "-i", url)
            assert out.startswith(b"HTTP/1.1 200")


async def test_tls_http2_disabled_negotiates_http11(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    async with run_upstream(_upstream) as up:
        cfg = simple_config(up.url)
        cfg["listeners"] = [{"name": "tls", "tls": {"cert": cert, "key": key}, "http2": False}]
        async with run_gateway(cfg) as gw:
            rc, out, _ = await curl("-k", "--http2", "-i", f"https://127.0.0.1:{gw.port}/t")
            assert rc == 0 and out.startswith(b"HTTP/1.1 200")
            # and no h2c on the cleartext side either: the preface is just a bad request
            cfg2 = simple_config(up.url)
            cfg2["listeners"] = [{"name": "p", "http2": False}]
        async with run_gateway(cfg2) as gw2:
            out = await raw_request(gw2.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", timeout=2)
            assert out.startswith(b"HTTP/1.1 400")


async def test_garbage_after_preface_gets_goaway() -> None:
    async with run_upstream(_upstream) as up, run_gateway(simple_config(up.url)) as gw:
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        # an oversized frame is refused from its header alone, without buffering its body
        out = await raw_request(gw.port, preface + b"this is not an HTTP/2 frame at all")
        frames = _frame_types(out)
        assert 0x4 in frames  # our SETTINGS
        assert 0x7 in frames  # GOAWAY
        # DATA on stream 0 is a connection error (RFC 9113 §6.1)
        out = await raw_request(
            gw.port, preface + settings + b"\x00\x00\x01\x00\x00" + b"\0" * 4 + b"x"
        )
        assert 0x7 in _frame_types(out)
        # a preface split across reads is still recognised
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        for part in (preface[:3], preface[3:10], preface[10:]):
            w.write(part)
            await w.drain()
            await asyncio.sleep(0.02)
        data = await asyncio.wait_for(r.read(9), 3)
        assert data[3] == 0x4
        w.close()
        status, _, _ = await http_get(gw.url + "/still-fine")
        assert status == 200


async def test_client_reset_leaves_other_streams_alone() -> None:
    async with run_upstream(_upstream) as up, run_gateway(simple_config(up.url)) as gw:
        c = await H2Client.open(gw.port)
        try:
            big = c.request("GET", "/big")
            await c.flush()
            await c.pump_once()
            c.conn.reset_stream(big)
            c.responses[big]["done"] = True
            ok = c.request("GET", "/after")
            await c.flush()
            await c.wait(ok)
            assert c.responses[ok]["status"] == 200
            assert not c.closed
        finally:
            c.close()


async def test_bad_requests_get_stream_level_json_errors() -> None:
    async with run_upstream(_upstream) as up:
        cfg = simple_config(up.url)
        cfg["server"] = {"limits": {"max_uri_bytes": 100}}
        async with run_gateway(cfg) as gw:
            c = await H2Client.open(gw.port)
            try:
                long = c.request("GET", "/" + "a" * 200)
                enc = c.request("GET", "/a/%2e%2e/%2e%2e/etc")
                ok = c.request("GET", "/fine")
                await c.flush()
                await c.wait(long, enc, ok)
                assert c.responses[long]["status"] == 414
                assert orjson.loads(bytes(c.responses[long]["body"]))["status"] == 414
                assert c.responses[ok]["status"] == 200
                assert orjson.loads(bytes(c.responses[enc]["body"]))["path"] == "/etc"
            finally:
                c.close()


def _frame_types(data: bytes) -> list[int]:
    types = []
    i = 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i : i + 3], "big")
        types.append(data[i + 3])
        i += 9 + length
    return types


async def test_chunked_upstream_body_streams_to_h2_client() -> None:
    parts = [b"a" * 70000, b"b" * 5, b"c" * 100000]

    async def raw_upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        for p in parts:
            w.write(b"%x\r\n%b\r\n" % (len(p), p))
            await w.drain()
            await asyncio.sleep(0.01)
        w.write(b"0\r\n\r\n")
        await w.drain()
        w.close()

    server = await asyncio.start_server(raw_upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_gateway(simple_config(f"http://127.0.0.1:{port}")) as gw:
            c = await H2Client.open(gw.port)
            try:
                sid = c.request("GET", "/stream")
                await c.flush()
                await c.wait(sid)
                r = c.responses[sid]
                assert r["status"] == 200 and r["reset"] is None
                assert bytes(r["body"]) == b"".join(parts)
                names = {k for k, _ in r["headers"]}
                assert b"transfer-encoding" not in names and b"connection" not in names
            finally:
                c.close()
    finally:
        server.close()


async def test_large_gateway_generated_body_beyond_the_window() -> None:
    big = "x" * 300_000
    cfg = {
        "routes": [
            {
                "name": "t",
                "match": {"paths": ["/"]},
                "plugins": [
                    {"name": "request_termination", "config": {"status": 200, "body": big}}
                ],
            }
        ]
    }
    async with run_gateway(cfg) as gw:
        c = await H2Client.open(gw.port)
        try:
            sids = [c.request("GET", f"/t{i}") for i in range(3)]
            await c.flush()
            await c.wait(*sids)
            for sid in sids:
                assert c.responses[sid]["status"] == 200
                assert c.responses[sid]["reset"] is None
                assert len(c.responses[sid]["body"]) >= 300_000
        finally:
            c.close()


async def test_connect_is_refused_with_501() -> None:
    async with run_upstream(_upstream) as up, run_gateway(simple_config(up.url)) as gw:
        c = await H2Client.open(gw.port)
        try:
            sid = c.conn.get_next_available_stream_id()
            hdrs = [(b":method", b"CONNECT"), (b":authority", b"example.test:443")]
            c.conn.send_headers(sid, hdrs)
            c.responses[sid] = {"status": None, "body": bytearray(), "done": False, "reset": None}
            await c.flush()
            await c.wait(sid)
            assert c.responses[sid]["status"] == 501
            assert orjson.loads(bytes(c.responses[sid]["body"]))["status"] == 501
            ok = c.request("GET", "/after")
            await c.flush()
            await c.wait(ok)
            assert c.responses[ok]["status"] == 200
        finally:
            c.close()


async def test_upstream_trailers_reach_the_h2_client() -> None:
    async def raw_upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
            b"5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n"
        )
        await w.drain()
        w.close()

    server = await asyncio.start_server(raw_upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_gateway(simple_config(f"http://127.0.0.1:{port}")) as gw:
            c = await H2Client.open(gw.port)
            try:
                sid = c.request("GET", "/t")
                await c.flush()
                await c.wait(sid)
                assert bytes(c.responses[sid]["body"]) == b"hello"
                trailers = [e for e in c.events if isinstance(e, h2.events.TrailersReceived)]
                assert trailers and (b"x-checksum", b"abc") in trailers[0].headers
            finally:
                c.close()
    finally:
        server.close()


async def test_early_hints_reach_the_h2_client_without_hop_by_hop_fields() -> None:
    """A 103 goes through the stream's native writer (``send_info``) under the relay's rule:
    the same fields as on HTTP/1.1, connection-specific ones dropped."""

    async def raw_upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nKeep-Alive: 5\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        await w.drain()
        w.close()

    server = await asyncio.start_server(raw_upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with run_gateway(simple_config(f"http://127.0.0.1:{port}")) as gw:
            c = await H2Client.open(gw.port)
            try:
                sid = c.request("GET", "/hints")
                await c.flush()
                await c.wait(sid)
                assert bytes(c.responses[sid]["body"]) == b"ok"
                hints = [
                    e for e in c.events if isinstance(e, h2.events.InformationalResponseReceived)
                ]
                assert hints, c.events
                fields = dict(hints[0].headers)
                assert fields[b":status"] == b"103"
                assert fields[b"link"] == b"</a.css>; rel=preload"
                assert b"keep-alive" not in fields
            finally:
                c.close()
    finally:
        server.close()

"""Issue 15: underscore spellings of gateway-owned headers (http/owned.py), one request
validation for HTTP/1.1 and HTTP/2 (http/validate.py), precise 400s with a request id, and
parser-callback bugs answered as logged 500s. HTTP/1.1 cases run on the general path (cold
pool) and the task-free path (warm pool); HTTP/2 uses an h2c prior-knowledge client."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h2.config
import h2.connection
import h2.events
import orjson
import pytest

from tests.helpers import answering, raw_request, raw_upstream, run_gateway, skip_without_nghttp2
from tests.http.adv_helpers import parse_responses

SPOOFS = [
    (b"X_Forwarded_For", b"6.6.6.6"),
    (b"x_real_ip", b"6.6.6.6"),
    (b"X_CONSUMER_USERNAME", b"root"),
    (b"X_Credential_Identifier", b"key_auth:x"),
    (b"X_User_ID", b"0"),
    (b"X_Request_ID", b"forged"),
    (b"X_Portway_Debug", b"x"),
]


def _cfg(url: str, underscores: bool | None = None) -> dict[str, Any]:
    listener: dict[str, Any] = {"name": "public"}
    if underscores is not None:
        listener["underscores_in_headers"] = underscores
    return {
        "listeners": [listener],
        "upstreams": {"u": {"targets": [{"url": url}]}},
        "routes": [{"name": "r", "match": {"paths": ["/"]}, "upstream": "u"}],
        "plugins": [{"name": "identity_headers", "config": {"claims": {"sub": "X-User-ID"}}}],
    }


class Recorder:
    def __init__(self) -> None:
        self.heads: list[bytes] = []

    async def __call__(self, head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        self.heads.append(head)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        return True


def _request(fields: list[tuple[bytes, bytes]]) -> bytes:
    return (
        b"GET /x HTTP/1.1\r\nHost: a\r\n"
        + b"".join(k + b": " + v + b"\r\n" for k, v in fields)
        + b"X_Custom_Field: kept\r\nConnection: close\r\n\r\n"
    )


@pytest.mark.parametrize("warm", [False, True], ids=["general", "task_free"])
@pytest.mark.parametrize("underscores", [None, True])
async def test_underscore_spellings_never_reach_the_upstream(
    warm: bool, underscores: bool | None
) -> None:
    rec = Recorder()
    async with raw_upstream(rec) as url, run_gateway(_cfg(url, underscores)) as gw:
        app = gw.worker.app
        assert app is not None
        if warm:
            assert (await raw_request(gw.port, _request([]))).startswith(b"HTTP/1.1 200")
        before = app.fast_requests
        out = await raw_request(gw.port, _request(SPOOFS))
        assert out.startswith(b"HTTP/1.1 200"), out
        assert (app.fast_requests > before) == warm
        head = rec.heads[-1].lower()
        for name, _ in SPOOFS:
            assert name.lower() + b":" not in head
        assert b"6.6.6.6" not in head and b"root" not in head and b"forged" not in head
        # other underscore names: dropped by default (nginx), kept when the listener allows
        assert (b"x_custom_field: kept" in head) == bool(underscores)


class H2:
    """An h2c prior-knowledge client that can send what a conforming client would not."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w
        cfg = h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False
        )
        self.c = h2.connection.H2Connection(cfg)
        self.c.initiate_connection()

    async def get(self, path: bytes, fields: list[tuple[bytes, bytes]] = ()) -> tuple[int, bytes]:  # type: ignore[assignment]
        sid = self.c.get_next_available_stream_id()
        hdrs = [(b":method", b"GET"), (b":path", path), (b":scheme", b"http")]
        hdrs += [(b":authority", b"a"), *fields]
        self.c.send_headers(sid, hdrs, end_stream=True)
        self.w.write(self.c.data_to_send())
        status, body = 0, b""
        async with asyncio.timeout(5):
            while True:
                data = await self.r.read(65536)
                if not data:
                    return -1, b""  # connection closed (GOAWAY)
                for ev in self.c.receive_data(data):
                    if getattr(ev, "stream_id", None) != sid:
                        continue
                    if isinstance(ev, h2.events.ResponseReceived):
                        status = int(dict(ev.headers)[b":status"])
                    elif isinstance(ev, h2.events.DataReceived):
                        body += ev.data
                        self.c.acknowledge_received_data(ev.flow_controlled_length, sid)
                    elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                        self.w.write(self.c.data_to_send())
                        return status, body
                self.w.write(self.c.data_to_send())


async def _h2(port: int) -> H2:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    return H2(r, w)


@pytest.mark.parametrize("underscores", [None, True])
async def test_h2_underscore_spellings_dropped(underscores: bool | None) -> None:
    rec = Recorder()
    async with raw_upstream(rec) as url, run_gateway(_cfg(url, underscores)) as gw:
        c = await _h2(gw.port)
        fields = [(k.lower(), v) for k, v in SPOOFS] + [(b"x_custom_field", b"kept")]
        assert await c.get(b"/x", fields) == (200, b"ok")
        head = rec.heads[-1].lower()
        assert b"6.6.6.6" not in head and b"root" not in head and b"forged" not in head
        assert (b"x_custom_field: kept" in head) == bool(underscores)


#: (path, extra field value) an upstream request line or header section must never carry
BAD = [
    (b"/raw?t=x HTTP/1.1", None),
    (b"/raw?t=x\ty", None),
    (b"/raw?t=x\x01", None),
    (b"/raw?t=x\xff", None),
    (b"/raw\xc3\xa9", None),
    (b"/raw?t=\x7f", None),
    (b"/ok", b"a\x01b"),
    (b"/ok", b"a\x7fb"),
    (b"/ok", b"a\x0bb"),
    (b"/ok", b"a\x0cb"),
    (b"/ok", b"a\x00b"),
]


@pytest.mark.parametrize(("path", "value"), BAD)
async def test_same_bytes_refused_on_http1_and_http2(
    path: bytes, value: bytes | None, h2_engine: str
) -> None:
    rec = Recorder()
    async with raw_upstream(rec) as url, run_gateway(_cfg(url)) as gw:
        extra = b"X-T: " + value + b"\r\n" if value is not None else b""
        out = await raw_request(
            gw.port, b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n" + extra + b"\r\n"
        )
        assert out.startswith(b"HTTP/1.1 400"), out
        c = await _h2(gw.port)
        status, body = await c.get(path, [(b"x-t", value)] if value is not None else [])
        # nghttp2 checks the :path bytes itself (a pseudo-header it finds invalid is a
        # malformed request, never passed on); either refusal keeps the bytes off the hop
        path_refused = h2_engine == "nghttp2" and value is None and status == 0
        if (value is not None and 0 in value) or path_refused:
            # NUL, CR, LF: h2 refuses the field itself; a malformed request is a stream error
            # (RFC 9113 §8.2.1, §8.1.1): RST_STREAM, and the connection goes on
            assert status == 0
            assert await c.get(b"/fine") == (200, b"ok")
            assert len(rec.heads) == 1 and rec.heads[0].startswith(b"GET /fine ")
            return
        assert status == 400, body
        err = orjson.loads(body)
        assert err["status"] == 400 and err["request_id"]
        assert "invalid character" in err["error"]
        # still serving the connection's other streams
        assert await c.get(b"/fine") == (200, b"ok")
        assert len(rec.heads) == 1 and rec.heads[0].startswith(b"GET /fine ")


@pytest.mark.parametrize(
    ("path", "words"),
    [
        (b"/a/..;/b", "dot segment with path parameters"),
        (b"/a%00", "NUL"),
        (b"/a%c0%af", "not valid UTF-8"),
        (b"/a\\b", "backslash"),
        (b"/a%uff0e", "'%u' escape"),
        (b"/a%zz", "malformed percent-encoding"),
    ],
)
async def test_refused_paths_say_why_with_a_request_id(path: bytes, words: str) -> None:
    async with (
        raw_upstream(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as url,
        run_gateway(_cfg(url)) as gw,
    ):
        out = await raw_request(gw.port, b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        resp = parse_responses(out)[0]
        assert resp.status == 400
        body = orjson.loads(resp.body)
        assert words in body["error"] and "callback" not in body["error"]
        assert isinstance(body["request_id"], str) and len(body["request_id"]) == 32
        # the client's own well-formed id is kept
        out = await raw_request(
            gw.port, b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nX-Request-ID: abc-1\r\n\r\n"
        )
        assert orjson.loads(parse_responses(out)[0].body)["request_id"] == "abc-1"
        if path != b"/a\\b":  # a backslash cannot be sent as an HTTP/2 :path either way
            c = await _h2(gw.port)
            status, h2body = await c.get(path)
            assert status == 400 and words in orjson.loads(h2body)["error"]


async def test_a_bug_inside_the_request_parser_callback_is_a_logged_500(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from portway.http import serverparse

    def broken(_: Any) -> Any:
        raise TypeError("a bug")

    # a module global (compiled code looks those up too; its classes cannot be patched),
    # called while building the request of an upgrade, inside llhttp's callback
    monkeypatch.setattr(serverparse, "is_websocket", broken)
    async with (
        raw_upstream(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as url,
        run_gateway(_cfg(url)) as gw,
    ):
        with caplog.at_level(logging.ERROR, "portway.http"):
            out = await raw_request(
                gw.port,
                b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            )
        resp = parse_responses(out)[0]
        assert resp.status == 500
        assert orjson.loads(resp.body)["code"] == "internal_error"
        assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


async def test_h2_joined_cookie_crumbs_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each crumb passes the field rules, but an empty last one makes the joined Cookie end
    in a space: refused as HTTP/1.1 would refuse it (on nghttp2 too, where the crumbs'
    own checks are nghttp2's); crumbs that join cleanly are forwarded as one field.
    (nghttp2 only: the h2 library refuses such values itself, before our rules.)"""
    from portway.http import ng2lib

    if ng2lib.load() is None:
        skip_without_nghttp2()
    monkeypatch.setenv("PORTWAY_H2_ENGINE", "nghttp2")
    rec = Recorder()
    async with raw_upstream(rec) as url, run_gateway(_cfg(url)) as gw:
        c = await _h2(gw.port)
        # (values sent as they are: h2 would strip their surrounding whitespace)
        c.c = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        c.c.initiate_connection()
        status, body = await c.get(b"/x", [(b"cookie", b"a=1"), (b"cookie", b"")])
        assert status == 400, body
        assert "whitespace around the value of header field cookie" in orjson.loads(body)["error"]
        # a value with a space around it: nghttp2 passes it to ``on_invalid_header``, and the
        # request's fields are all checked again (the same 400 as on the h2 engine)
        status, body = await c.get(b"/x", [(b"x-a", b"1"), (b"x-t", b" lead")])
        assert status == 400, body
        assert "whitespace around the value of header field x-t" in orjson.loads(body)["error"]
        assert await c.get(b"/x", [(b"cookie", b"a=1"), (b"cookie", b"b=2")]) == (200, b"ok")
        assert b"cookie: a=1; b=2\r\n" in rec.heads[-1].lower()
        assert len(rec.heads) == 1


@pytest.mark.parametrize("validated", [True, False])
async def test_h2_fields_checked_by_us_unless_nghttp2_validates(
    monkeypatch: pytest.MonkeyPatch, validated: bool
) -> None:
    """On nghttp2, our field rules skip a block nghttp2 accepted whole only while the
    library passed its self-check at load (``ng2cb.fields_validated``); otherwise every
    field of every request is checked by ours."""
    from portway.http import ng2cb, ng2lib, streamreq

    if ng2lib.load() is None:
        skip_without_nghttp2()
    monkeypatch.setenv("PORTWAY_H2_ENGINE", "nghttp2")
    monkeypatch.setattr(ng2cb, "fields_validated", validated)
    checked: list[list[tuple[bytes, bytes]]] = []
    real = streamreq.check_fields

    def spy(fields: list[tuple[bytes, bytes]], h2: bool = False) -> None:
        checked.append(list(fields))
        real(fields, h2=h2)

    monkeypatch.setattr(streamreq, "check_fields", spy)
    rec = Recorder()
    async with raw_upstream(rec) as url, run_gateway(_cfg(url)) as gw:
        c = await _h2(gw.port)
        assert await c.get(b"/x", [(b"x-a", b"1")]) == (200, b"ok")
    assert any((b"x-a", b"1") in f for f in checked) is not validated


#: llhttp's method names (its HTTP and RTSP tables), and spellings it has no name for
_METHOD_CANDIDATES = [
    "DELETE",
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "COPY",
    "LOCK",
    "MKCOL",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "SEARCH",
    "UNLOCK",
    "BIND",
    "REBIND",
    "UNBIND",
    "ACL",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PATCH",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "SOURCE",
    "QUERY",
    "PRI",
    "DESCRIBE",
    "ANNOUNCE",
    "SETUP",
    "PLAY",
    "PAUSE",
    "TEARDOWN",
    "GET_PARAMETER",
    "SET_PARAMETER",
    "REDIRECT",
    "RECORD",
    "FLUSH",
    "get",
    "Get",
    "post",
    "propfind",
    "FOO",
    "GE",
    "GETS",
    "M-SEARCHX",
]


@pytest.mark.parametrize("method", _METHOD_CANDIDATES)
def test_http2_methods_are_those_the_http1_parser_takes(method: str) -> None:
    """``validate.METHODS_OK`` (what HTTP/2 and HTTP/3 take) is exactly what llhttp takes on
    an ``HTTP/1.1`` request line, as the httptools installed here parses it."""
    import httptools

    from portway.http.validate import METHODS_OK

    p = httptools.HttpRequestParser(object())
    try:
        p.feed_data(method.encode() + b" / HTTP/1.1\r\nHost: a\r\n\r\n")
        taken = True
    except httptools.HttpParserUpgrade:
        taken = True  # (CONNECT: the rest of the connection is a tunnel)
    except httptools.HttpParserError:
        taken = False
    assert (method.encode() in METHODS_OK) is taken

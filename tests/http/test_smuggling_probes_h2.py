"""HTTP/2 (h2c prior knowledge) request-smuggling and header-spelling probes, both server
engines (libnghttp2 and ``h2``), on the task-free (``warm``) and general (``cold``) paths.

Each probe is a header block (and body) sent without the client library's own checks. A
field HTTP/2 forbids or a byte that would change how the upstream's HTTP/1.1 head reads is
refused (a 400 or a reset stream: the engines differ in which) and nothing reaches the
upstream; anything else reaches it as one unambiguous HTTP/1.1 message (the upstream parses
the bytes it read with llhttp). A Host naming another entity than :authority and a method
llhttp does not know are refused alike by both engines (a JSON 400). HTTP/1.1 probes:
``test_smuggling_probes.py``.
"""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import orjson
import pytest

from portway.http import ng2lib
from tests.helpers import ServingPath, run_gateway, skip_without_nghttp2
from tests.http.adv_helpers import raw_upstream
from tests.http.test_smuggling_probes import SM, _config, _shown

_BASE = [(b":method", b"GET"), (b":path", b"/p"), (b":scheme", b"http"), (b":authority", b"a")]


def _with(name: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    return [(k, value) if k == name else (k, v) for k, v in _BASE]


_POST = _with(b":method", b"POST")

#: refused: a 400 or a reset stream (the engines differ in which), nothing forwarded
NO = None
#: refused by the rules both engines share (``http/streamreq.py``): a 400 with the JSON error
#: body on either engine, nothing forwarded
BAD = 400
#: name -> (header block, body, status (NO: refused), upstream messages)
H2_PROBES: dict[str, tuple[list[tuple[bytes, bytes]], bytes | None, int | None, list[str]]] = {
    "plain": ([*_BASE, (b"user-agent", b"t")], None, 200, ["GET /p | user-agent: t | host: a"]),
    "upper_case_name": ([*_BASE, (b"X-A", b"1")], None, None, []),
    "connection": ([*_BASE, (b"connection", b"keep-alive")], None, None, []),
    "connection_names_host": ([*_BASE, (b"connection", b"host")], None, None, []),
    "transfer_encoding": ([*_BASE, (b"transfer-encoding", b"chunked")], None, None, []),
    "te_gzip": ([*_BASE, (b"te", b"gzip")], None, None, []),
    "te_trailers": ([*_BASE, (b"te", b"trailers")], None, 200, ["GET /p | host: a"]),
    "upgrade": ([*_BASE, (b"upgrade", b"websocket")], None, None, []),
    "keep_alive": ([*_BASE, (b"keep-alive", b"5")], None, None, []),
    "proxy_connection": ([*_BASE, (b"proxy-connection", b"x")], None, None, []),
    "crlf_in_value": ([*_BASE, (b"x-a", b"1\r\nx-b: 2")], None, None, []),
    "lf_in_value": ([*_BASE, (b"x-a", b"1\nx-b: 2")], None, None, []),
    "nul_in_value": ([*_BASE, (b"x-a", b"1\x00")], None, None, []),
    "leading_space": ([*_BASE, (b"x-a", b" 1")], None, NO, []),
    "trailing_space": ([*_BASE, (b"x-a", b"1 ")], None, NO, []),
    "colon_in_name": ([*_BASE, (b"x:a", b"1")], None, NO, []),
    "space_in_name": ([*_BASE, (b"x a", b"1")], None, NO, []),
    "del_in_value": ([*_BASE, (b"x-a", b"1\x7f")], None, NO, []),
    "path_with_request_line": (_with(b":path", b"/p HTTP/1.1\r\nX: y"), None, None, []),
    "path_fragment": (_with(b":path", b"/p#f"), None, NO, []),
    "path_non_ascii": (_with(b":path", b"/p\xff"), None, NO, []),
    "path_traversal": (_with(b":path", b"/api/../admin"), None, 200, ["adm:GET /admin | host: a"]),
    "path_traversal_encoded": (
        _with(b":path", b"/api/%2e%2e/admin"),
        None,
        200,
        ["adm:GET /admin | host: a"],
    ),
    "path_relative": (_with(b":path", b"p"), None, None, []),
    "path_absolute_uri": (_with(b":path", b"http://evil/p"), None, None, []),
    "authority_userinfo": (_with(b":authority", b"u@a"), None, NO, []),
    "authority_crlf": (_with(b":authority", b"a\r\nx: y"), None, None, []),
    "host_differs_from_authority": ([*_BASE, (b"host", b"evil")], None, BAD, []),
    "host_differs_in_port": ([*_BASE, (b"host", b"a:8080")], None, BAD, []),
    "host_twice": ([*_BASE, (b"host", b"a"), (b"host", b"a")], None, NO, []),
    "host_before_pseudo": (
        [(b":method", b"GET"), (b"host", b"a"), *_BASE[1:]],
        None,
        NO,
        [],
    ),
    # RFC 3986 §6.2.2-6.2.3: the host is case-insensitive, the scheme's default port is none
    "host_same": ([*_BASE, (b"host", b"a")], None, 200, ["GET /p | host: a"]),
    "host_other_case": ([*_BASE, (b"host", b"A")], None, 200, ["GET /p | host: a"]),
    "host_default_port": ([*_BASE, (b"host", b"a:80")], None, 200, ["GET /p | host: a"]),
    "authority_default_port": (
        [*_with(b":authority", b"A:80"), (b"host", b"a")],
        None,
        200,
        ["GET /p | host: A:80"],
    ),
    "host_https_port_on_http": ([*_BASE, (b"host", b"a:443")], None, BAD, []),
    # methods: exactly those llhttp (the HTTP/1.1 listener's parser) takes
    "method_lower_case": (_with(b":method", b"get"), None, BAD, []),
    "method_unknown": (_with(b":method", b"FOO"), None, BAD, []),
    "method_rtsp_only": (_with(b":method", b"DESCRIBE"), None, BAD, []),
    "method_pri": (_with(b":method", b"PRI"), None, BAD, []),
    "method_webdav": (_with(b":method", b"PROPFIND"), None, 200, ["PROPFIND /p | host: a"]),
    "method_with_space": (_with(b":method", b"GET /x"), None, None, []),
    "pseudo_after_regular": (
        [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b"x-a", b"1"),
            (b":path", b"/p"),
            (b":authority", b"a"),
        ],
        None,
        None,
        [],
    ),
    "content_length_mismatch": ([*_POST, (b"content-length", b"5")], b"abc", None, []),
    "content_length_plus": ([*_POST, (b"content-length", b"+3")], b"abc", None, []),
    "content_length_list": ([*_POST, (b"content-length", b"3,3")], b"abc", None, []),
    "content_length_ok": (
        [*_POST, (b"content-length", b"3")],
        b"abc",
        200,
        ["POST /p | host: a | content-length: 3 | body=abc"],
    ),
    "request_in_body": (
        _POST,
        SM,
        200,
        ["POST /p | host: a | transfer-encoding: chunked | body=" + SM.decode()],
    ),
}


async def _h2_exchange(
    port: int, block: list[tuple[bytes, bytes]], body: bytes | None
) -> tuple[int | None, bool, bytes]:
    """One request over h2c prior knowledge, sent without the client library's checks; the
    response status (None: no response), whether the stream was reset, the response body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
    )
    conn.initiate_connection()
    conn.send_headers(1, block, end_stream=body is None)
    if body is not None:
        conn.send_data(1, body, end_stream=True)
    writer.write(conn.data_to_send())
    status: int | None = None
    reset = False
    got = b""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), 5)
            if not data:
                break
            events = conn.receive_data(data)
            writer.write(conn.data_to_send())
            done = False
            for ev in events:
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    got += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    reset = done = True
                elif isinstance(ev, h2.events.StreamEnded):
                    done = True
            if done:
                break
    finally:
        writer.close()
    return status, reset, got


@pytest.mark.parametrize("engine", ["nghttp2", "h2"])
@pytest.mark.parametrize("mode", ["warm", "cold"])
@pytest.mark.parametrize("name", list(H2_PROBES))
async def test_h2_probe(name: str, mode: str, engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if engine == "nghttp2" and ng2lib.load() is None:
        skip_without_nghttp2()
    monkeypatch.setenv("PORTWAY_H2_ENGINE", engine)
    block, body, want, want_up = H2_PROBES[name]
    path = ServingPath(mode)
    async with raw_upstream() as up, raw_upstream() as adm:
        async with run_gateway(path.config(_config(up.url, adm.url))) as gw:
            await path.prepare(gw)
            warmed = len(up.messages)
            status, reset, got = await _h2_exchange(gw.port, block, body)
    del up.messages[:warmed]
    seen = [_shown(m, "", "") for m in up.messages] + [_shown(m, "adm:", "") for m in adm.messages]
    if want is NO:
        assert status == 400 or (status is None and reset), (status, reset)
    else:
        assert status == want, (status, reset)
    if want == BAD:
        assert orjson.loads(got)["code"] == "bad_request", got
    assert seen == want_up, seen
    assert up.errors == [] and adm.errors == []

"""Request-smuggling, path-traversal and header-spelling probes, on every serving path.

Each probe is sent as ONE read on a fresh connection, so a whole head at a message boundary
meets the loop's lite parser (``http/serverlite.py``) exactly as a scanner's request would,
then a barrier request (``GET /barrier``, ``Connection: close``) as a second read. It runs on:

- ``lite``: a warm pool, the lite parser on — a plain head is forwarded from the client's own
  request line and field lines (``forwarding.forward_lite_lines``, ``fastlines._lite_request_line``);
- ``fields``: a warm pool, the lite parser off — every head parsed field by field, the
  task-free path writing the fields (``forward_header_lines``);
- ``general``: no pooled connection (``ServingPath("cold")``) — the task's ``proxy/forward.py``.

For every probe and path the client gets the same statuses (a refused head: one 400 with a
JSON body and ``Connection: close``, the barrier never answered) and the upstream receives the
same messages, parsed by llhttp from the exact bytes it read: method, target, the fields
(names lower-cased, the gateway's own X-Forwarded-*/X-Real-IP/Via left out) and the body —
one reading of each message, the same on the fast and the general path (docs/architecture.md,
"Issue 26, session 12: smuggling probes"). The same probes over HTTP/2:
``test_smuggling_probes_h2.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from portway.http.serverlite import hooks_for
from tests.helpers import ServingPath, run_gateway
from tests.http.adv_helpers import Message, RawUpstream, parse_responses, raw_upstream

BARRIER = b"GET /barrier HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
G = b"GET /p HTTP/1.1\r\nHost: a\r\n"
P = b"POST /p HTTP/1.1\r\nHost: a\r\n"
SM = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
C3 = b"3\r\nabc\r\n0\r\n\r\n"

#: what every forwarded GET /p carries besides the gateway's own fields
HOST_A = "host: a"


class Probe:
    """``reads`` (the probe's bytes; a second read when given), the statuses the client gets
    for them, and the upstream messages (``"METHOD target | field: value | ... | body=..."``;
    ``adm:`` for the ``/admin`` route's upstream). ``refused``: one 400 that closes the
    connection (the barrier never answered, nothing forwarded); ``keep`` False: answered, and
    then the connection closes (``Connection: close``)."""

    def __init__(
        self,
        reads: bytes | list[bytes],
        statuses: list[int] | None = None,
        *up: str,
        keep: bool = True,
    ) -> None:
        self.reads = [reads] if isinstance(reads, bytes) else reads
        self.refused = statuses is None
        self.keep = keep
        self.statuses = [400] if statuses is None else statuses
        self.up = list(up)


def refused(reads: bytes | list[bytes]) -> Probe:
    return Probe(reads)


def ok(
    reads: bytes | list[bytes], *up: str, statuses: list[int] | None = None, keep: bool = True
) -> Probe:
    return Probe(reads, statuses or [200], *up, keep=keep)


PROBES: dict[str, Probe] = {
    "plain": ok(G + b"User-Agent: t\r\n\r\n", "GET /p | host: a | user-agent: t"),
    # --- framing: CL and TE (RFC 9112 §6.1, §6.3) -----------------------------------------
    "cl_te": refused(P + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"),
    "te_cl": refused(P + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + C3),
    "cl_duplicate_same": refused(P + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    "cl_duplicate_diff": refused(P + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    "cl_plus": refused(P + b"Content-Length: +3\r\n\r\nabc"),
    "cl_list": refused(P + b"Content-Length: 3,3\r\n\r\nabc"),
    "cl_list_spaced": refused(P + b"Content-Length: 3, 3\r\n\r\nabc"),
    "cl_negative": refused(P + b"Content-Length: -3\r\n\r\nabc"),
    "cl_leading_ows": ok(
        P + b"Content-Length:  3\r\n\r\nabc", "POST /p | host: a | content-length: 3 | body=abc"
    ),
    "cl_zero_get": ok(G + b"Content-Length: 0\r\n\r\n", "GET /p | host: a"),
    "get_body_hides_request": ok(
        G + b"Content-Length: %d\r\n\r\n" % len(SM) + SM,
        "GET /p | host: a | content-length: 35 | body=" + SM.decode(),
    ),
    "te_chunked_identity": refused(P + b"Transfer-Encoding: chunked, identity\r\n\r\n" + C3),
    "te_identity_chunked": refused(P + b"Transfer-Encoding: identity, chunked\r\n\r\n" + C3),
    "te_chunked_twice": refused(
        P + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" + C3
    ),
    "te_mixed_case": ok(
        P + b"Transfer-Encoding: ChUnKeD\r\n\r\n" + C3,
        "POST /p | host: a | transfer-encoding: chunked | body=abc",
    ),
    "te_trailing_space": ok(
        P + b"Transfer-Encoding: chunked \r\n\r\n" + C3,
        "POST /p | host: a | transfer-encoding: chunked | body=abc",
    ),
    # llhttp fails these after the head: refused before the head goes upstream
    "te_trailing_tab": refused(P + b"Transfer-Encoding: chunked\t\r\n\r\n" + C3),
    "te_trailing_space_tab": refused(P + b"Transfer-Encoding: chunked \t\r\n\r\n" + C3),
    "te_x_chunked": refused(P + b"Transfer-Encoding: x-chunked\r\n\r\n" + C3),
    "te_http10": refused(b"POST /p HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + C3),
    "te_obs_fold": refused(P + b"Transfer-Encoding:\r\n chunked\r\n\r\n" + C3),
    "te_underscore": ok(
        P + b"Transfer_Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        "POST /p | host: a | content-length: 3 | body=abc",
    ),
    "cl_underscore": ok(G + b"Content_Length: 5\r\n\r\n", "GET /p | host: a"),
    "conn_names_te": ok(
        P + b"Connection: close, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n" + C3,
        "POST /p | host: a | transfer-encoding: chunked | body=abc",
        keep=False,
    ),
    "conn_names_cl": ok(
        P + b"Connection: Content-Length\r\nContent-Length: 3\r\n\r\nabc",
        "POST /p | host: a | content-length: 3 | body=abc",
    ),
    "post_without_body": ok(P + b"\r\n", "POST /p | host: a | content-length: 0"),
    # --- chunked bodies (the head went upstream: the exchange is abandoned) ---------------
    "chunk_extension": ok(
        P + b"Transfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0;x\r\n\r\n",
        "POST /p | host: a | transfer-encoding: chunked | body=abc",
    ),
    "smuggled_in_chunked_body": ok(
        P + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(SM), SM),
        "POST /p | host: a | transfer-encoding: chunked | body=" + SM.decode(),
    ),
    "smuggled_in_cl_body": ok(
        P + b"Content-Length: %d\r\n\r\n" % len(SM) + SM,
        "POST /p | host: a | content-length: 35 | body=" + SM.decode(),
    ),
    # --- the header section ---------------------------------------------------------------
    "obs_fold": refused(G + b"X-A: 1\r\n 2\r\n\r\n"),
    "obs_fold_tab": refused(G + b"X-A: 1\r\n\t2\r\n\r\n"),
    "space_before_colon_host": refused(b"GET /p HTTP/1.1\r\nHost : a\r\n\r\n"),
    "space_before_colon": refused(G + b"X-A : 1\r\n\r\n"),
    "name_at": refused(G + b"X@A: 1\r\n\r\n"),
    "name_space": refused(G + b"X A: 1\r\n\r\n"),
    "name_quoted": refused(G + b'"X": 1\r\n\r\n'),
    "name_empty": refused(G + b": 1\r\n\r\n"),
    "name_del": refused(G + b"X\x7fA: 1\r\n\r\n"),
    "name_non_ascii": refused(G + b"X-\xd0\xb0: 1\r\n\r\n"),
    "value_colon": ok(G + b"X:: 1\r\n\r\n", "GET /p | host: a | x: : 1"),
    "value_no_space": ok(G + b"X-A:1\r\n\r\n", "GET /p | host: a | x-a: 1"),
    "value_obs_text": ok(
        G + b"X-A: caf\xc3\xa9\xff\r\n\r\n", "GET /p | host: a | x-a: caf\xc3\xa9\xff"
    ),
    "bare_lf": refused(b"GET /p HTTP/1.1\nHost: a\n\n"),
    "bare_lf_field": refused(G + b"X-A: 1\nTransfer-Encoding: chunked\r\n\r\n" + C3),
    "bare_cr_field": refused(G + b"X-A: 1\rX-B: 2\r\n\r\n"),
    "nul_value": refused(G + b"X-A: 1\x00\r\n\r\n"),
    "ctl_value": refused(G + b"X-A: 1\x01\r\n\r\n"),
    "del_value": refused(G + b"X-A: 1\x7f\r\n\r\n"),
    "vt_value": refused(G + b"X-A: 1\x0b2\r\n\r\n"),
    "long_value": Probe(G + b"X-A: " + b"a" * 70000 + b"\r\n\r\n", [431], keep=False),
    "long_target": Probe(
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", [414], keep=False
    ),
    "many_fields": Probe(
        G + b"".join(b"X-%d: 1\r\n" % i for i in range(300)) + b"\r\n", [431], keep=False
    ),
    # --- Host -----------------------------------------------------------------------------
    "host_duplicate": refused(b"GET /p HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    "host_duplicate_same": refused(b"GET /p HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
    "host_userinfo": refused(b"GET /p HTTP/1.1\r\nHost: u@a\r\n\r\n"),
    "host_space": refused(b"GET /p HTTP/1.1\r\nHost: a b\r\n\r\n"),
    "host_path": refused(b"GET /p HTTP/1.1\r\nHost: a/b\r\n\r\n"),
    "host_missing": refused(b"GET /p HTTP/1.1\r\nX-A: 1\r\n\r\n"),
    "host_ows": ok(b"GET /p HTTP/1.1\r\nHost: \t a \t\r\n\r\n", "GET /p | host: a"),
    "host_not_first": ok(
        b"GET /p HTTP/1.1\r\nX-A: 1\r\nHost: a\r\n\r\n", "GET /p | x-a: 1 | host: a"
    ),
    # RFC 9112 §3.2.2: the absolute-form authority replaces Host
    "absolute_form": ok(
        b"GET http://good.test/p HTTP/1.1\r\nHost: evil.test\r\n\r\n", "GET /p | host: good.test"
    ),
    "absolute_form_port": ok(
        b"GET http://good.test:81/p?q HTTP/1.1\r\nHost: evil.test\r\n\r\n",
        "GET /p?q | host: good.test:81",
    ),
    "absolute_form_userinfo": refused(b"GET http://u@good.test/p HTTP/1.1\r\nHost: a\r\n\r\n"),
    "absolute_form_no_host": refused(b"GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n"),
    # a Connection option never strips Host (nor a field the gateway asserts)
    "conn_names_host": ok(G + b"Connection: Host\r\n\r\n", "GET /p | host: a"),
    "conn_names_host_keep_alive": ok(
        G + b"Connection: keep-alive, host\r\n\r\n", "GET /p | host: a"
    ),
    "conn_names_field": ok(
        G + b"Connection: X-Secret\r\nX-Secret: s\r\nX-B: 1\r\n\r\n", "GET /p | host: a | x-b: 1"
    ),
    "conn_close_names_field": ok(
        G + b"Connection: close\r\nClose: x\r\nX-A: 1\r\n\r\n",
        "GET /p | host: a | x-a: 1",
        keep=False,
    ),
    "conn_keep_alive_upper_case": ok(
        G + b"Connection: KEEP-ALIVE\r\nKeep-Alive: 5\r\nX-A: 1\r\n\r\n",
        "GET /p | host: a | x-a: 1",
    ),
    # an empty Host (valid: RFC 9110 §7.2 reg-name may be empty) is no host to preserve
    "host_empty": ok(b"GET /p HTTP/1.1\r\nHost:\r\n\r\n", "GET /p | host: TARGET"),
    # HTTP/1.0 without Host: the upstream hop is HTTP/1.1, so it gets the target's
    "http10_no_host": Probe(
        b"GET /p HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", [200], "GET /p | host: TARGET"
    ),
    # --- the request line and target --------------------------------------------------------
    "fragment": refused(b"GET /p#x HTTP/1.1\r\nHost: a\r\n\r\n"),
    "fragment_in_query": refused(b"GET /p?a#x HTTP/1.1\r\nHost: a\r\n\r\n"),
    "space_in_target": refused(b"GET /p x HTTP/1.1\r\nHost: a\r\n\r\n"),
    "nul_in_target": refused(b"GET /p\x00 HTTP/1.1\r\nHost: a\r\n\r\n"),
    "ctl_in_target": refused(b"GET /p\x01 HTTP/1.1\r\nHost: a\r\n\r\n"),
    "del_in_target": refused(b"GET /p\x7f HTTP/1.1\r\nHost: a\r\n\r\n"),
    "non_ascii_target": refused(b"GET /p\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
    "tab_separator": refused(b"GET\t/p HTTP/1.1\r\nHost: a\r\n\r\n"),
    "two_spaces": ok(b"GET  /p HTTP/1.1\r\nHost: a\r\n\r\n", "GET /p | host: a"),
    "query_odd_bytes": ok(
        b'GET /p?a="{|}\\^`<>[] HTTP/1.1\r\nHost: a\r\n\r\n', 'GET /p?a="{|}\\^`<>[] | host: a'
    ),
    # llhttp takes "RTSP/1.1" (GET, POST, OPTIONS, ...) and "ICE/1.0" (SOURCE): not HTTP
    "rtsp": refused(b"GET /p RTSP/1.1\r\nHost: a\r\n\r\n"),
    "rtsp_options": refused(b"OPTIONS /p RTSP/1.1\r\nHost: a\r\n\r\n"),
    "rtsp_after_empty_lines": refused(b"\r\n\r\n\r\n\r\n\r\nGET / RTSP/1.1\r\nHost: a\r\n\r\n"),
    # the request line split across reads (a slow client): the protocol is read all the same
    "rtsp_split": refused([b"GET /p RT", b"SP/1.1\r\nHost: a\r\n\r\n"]),
    "rtsp_split_in_target": refused([b"GET /", b"p RTSP/1.1\r\nHost: a\r\n\r\n"]),
    "ice_split": refused([b"SOURCE /p IC", b"E/1.0\r\nHost: a\r\n\r\n"]),
    "http_split": ok([b"GET /p HT", b"TP/1.1\r\nHost: a\r\n\r\n"], "GET /p | host: a"),
    "ice": refused(b"SOURCE /p ICE/1.0\r\nHost: a\r\n\r\n"),
    "http09": refused(b"GET /p\r\n\r\n"),
    "http12": refused(b"GET /p HTTP/1.2\r\nHost: a\r\n\r\n"),
    "http2_line": refused(b"GET /p HTTP/2.0\r\nHost: a\r\n\r\n"),
    "lower_case_method": refused(b"get /p HTTP/1.1\r\nHost: a\r\n\r\n"),
    "lower_case_version": refused(b"GET /p http/1.1\r\nHost: a\r\n\r\n"),
    "asterisk_form": refused(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
    "connect": Probe(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", [501], keep=False),
    "http10_keep_alive": ok(
        b"GET /p HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", "GET /p | host: a"
    ),
    "empty_lines_first": ok(b"\r\n\r\n" + G + b"\r\n", "GET /p | host: a"),
    "pipelined": ok(
        G + b"\r\n" + SM, "GET /p | host: a", "GET /smuggled | host: a", statuses=[200, 200]
    ),
    # --- path traversal: /api (strip_prefix) and /admin (another upstream) ----------------
    "traversal_dot_dot": ok(
        b"GET /api/../admin HTTP/1.1\r\nHost: a\r\n\r\n", "adm:GET /admin | host: a"
    ),
    "traversal_encoded": ok(
        b"GET /api/%2e%2e/admin HTTP/1.1\r\nHost: a\r\n\r\n", "adm:GET /admin | host: a"
    ),
    "traversal_encoded_upper": ok(
        b"GET /api/%2E%2E/admin HTTP/1.1\r\nHost: a\r\n\r\n", "adm:GET /admin | host: a"
    ),
    # an encoded slash is refused per route (allow_encoded_slashes): a 400 that keeps the
    # connection, as a route's answer
    "traversal_encoded_slash": Probe(b"GET /api/..%2fadmin HTTP/1.1\r\nHost: a\r\n\r\n", [400]),
    "traversal_prefix_encoded_slash": Probe(
        b"GET /api%2f..%2fadmin HTTP/1.1\r\nHost: a\r\n\r\n", [400]
    ),
    "traversal_backslash": refused(b"GET /api/..\\admin HTTP/1.1\r\nHost: a\r\n\r\n"),
    "traversal_semicolon": refused(b"GET /api/..;/admin HTTP/1.1\r\nHost: a\r\n\r\n"),
    "traversal_overlong": refused(b"GET /api/%c0%ae%c0%ae/admin HTTP/1.1\r\nHost: a\r\n\r\n"),
    "traversal_nul": refused(b"GET /api/%00/x HTTP/1.1\r\nHost: a\r\n\r\n"),
    "traversal_stays_under_prefix": ok(
        b"GET /api/a/../x HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /x | host: a | x-forwarded-prefix: /api",
    ),
    "traversal_double_slash": ok(
        b"GET /api//x/./y HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /x/y | host: a | x-forwarded-prefix: /api",
    ),
    "traversal_double_encoded": ok(
        b"GET /api/%252e%252e/admin HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /%252e%252e/admin | host: a | x-forwarded-prefix: /api",
    ),
    "traversal_in_query": ok(
        b"GET /api/x?../../admin HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /x?../../admin | host: a | x-forwarded-prefix: /api",
    ),
    "prefix_exact": ok(
        b"GET /api HTTP/1.1\r\nHost: a\r\n\r\n", "GET / | host: a | x-forwarded-prefix: /api"
    ),
    "unreserved_escape": ok(
        b"GET /%61dmin HTTP/1.1\r\nHost: a\r\n\r\n", "adm:GET /admin | host: a"
    ),
    # --- Expect, Upgrade, hop-by-hop ---------------------------------------------------------
    "expect_get": ok(G + b"Expect: 100-continue\r\n\r\n", "GET /p | host: a"),
    "expect_post_body_later": ok(
        [P + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n", b"abc"],
        "POST /p | host: a | content-length: 3 | body=abc",
        statuses=[100, 200],
    ),
    "expect_post_body_at_once": ok(
        P + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        "POST /p | host: a | content-length: 3 | body=abc",
        statuses=[100, 200],
    ),
    "expect_unknown": ok(G + b"Expect: x-foo\r\n\r\n", "GET /p | host: a"),
    "upgrade_with_body": ok(
        G + b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 3\r\n\r\nabc",
        "GET /p | host: a | sec-websocket-version: 13 | sec-websocket-key: "
        "dGhlIHNhbXBsZSBub25jZQ== | content-length: 3 | body=abc",
    ),
    "upgrade_h2c": ok(
        G + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\n\r\n",
        "GET /p | host: a",
    ),
    "upgrade_without_connection": ok(G + b"Upgrade: websocket\r\n\r\n", "GET /p | host: a"),
    "proxy_connection": ok(G + b"Proxy-Connection: keep-alive\r\n\r\n", "GET /p | host: a"),
    "hop_by_hop_fields": ok(
        G + b"Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: x\r\nX-Portway-Debug: 1\r\n\r\n",
        "GET /p | host: a",
    ),
    "forwarding_fields_untrusted": ok(
        G + b"X-Forwarded-Host: evil\r\nForwarded: host=evil\r\nX-Real-IP: 6.6.6.6\r\n"
        b"X_Forwarded_For: 6.6.6.6\r\n\r\n",
        "GET /p | host: a",
    ),
    "field_named_close": ok(G + b"Close: x\r\n\r\n", "GET /p | host: a | close: x"),
}


def _config(up: str, adm: str) -> dict[str, Any]:
    return {
        "upstreams": {"u": {"targets": [{"url": up}]}, "adm": {"targets": [{"url": adm}]}},
        "routes": [
            {"name": "api", "match": {"paths": ["/api"]}, "upstream": "u", "strip_prefix": True},
            {"name": "admin", "match": {"paths": ["/admin"]}, "upstream": "adm"},
            {"name": "r", "match": {"paths": ["/"]}, "upstream": "u"},
        ],
    }


#: the fields the gateway adds to every forwarded request (compared elsewhere)
_ADDED = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port"}
    | {b"x-real-ip", b"via"}
)


def _shown(m: Message, where: str, target_host: str) -> str:
    parts = [f"{where}{m.method} {m.target.decode('latin-1')}"]
    for k, v in m.headers:
        if k not in _ADDED:
            value = v.decode("latin-1")
            parts.append(f"{k.decode()}: {'TARGET' if value == target_host else value}")
    if m.body:
        parts.append("body=" + m.body.decode("latin-1"))
    return " | ".join(parts)


async def _send(port: int, reads: list[bytes]) -> tuple[bytes, bool]:
    """Each read on its own (after the answers to the ones before it are in); the bytes the
    client got, and whether the gateway closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = b""
    try:
        for i, data in enumerate(reads):
            writer.write(data)
            await writer.drain()
            last = i == len(reads) - 1
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), 5 if last else 0.5)
                except TimeoutError:
                    break  # (a read answered only with the next one: a body, ``Expect``)
                if not chunk:
                    return out, True
                out += chunk
                resps = parse_responses(out)
                if not last and resps and all(r.complete for r in resps):
                    break
    except ConnectionError:
        return out, True
    finally:
        writer.close()
    return out, False


def _check_400(out: bytes) -> None:
    resps = parse_responses(out)
    r = resps[-1]
    assert r.header(b"connection") == b"close", out
    assert r.header(b"content-type") == b"application/json", out
    body = orjson.loads(r.body)
    assert body["status"] == 400 and body["code"] == "bad_request", body


MODES = ["lite", "fields", "general"]


async def _run(mode: str, probe: Probe) -> tuple[bytes, bool, RawUpstream, RawUpstream, str, int]:
    path = ServingPath("cold" if mode == "general" else "warm")
    async with raw_upstream() as up, raw_upstream() as adm:
        async with run_gateway(path.config(_config(up.url, adm.url))) as gw:
            await path.prepare(gw)
            warmed = len(up.messages)
            hooks = hooks_for(asyncio.get_running_loop())
            lite = hooks.lite
            if mode == "fields":
                hooks.lite = None  # every head parsed field by field
            try:
                out, closed = await _send(gw.port, [*probe.reads, BARRIER])
            finally:
                hooks.lite = lite
            started = path.served()["started"]
    del up.messages[:warmed]
    return out, closed, up, adm, f"127.0.0.1:{up.port}", started


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(PROBES))
async def test_probe(name: str, mode: str) -> None:
    probe = PROBES[name]
    out, closed, up, adm, target_host, started = await _run(mode, probe)
    resps = parse_responses(out)
    assert all(r.complete for r in resps), out
    statuses = [r.status for r in resps]
    seen = [_shown(m, "", target_host) for m in up.messages]
    seen += [_shown(m, "adm:", target_host) for m in adm.messages]
    assert up.errors == [] and adm.errors == [], (up.errors, adm.errors)
    if probe.refused or not probe.keep:
        # refused: the connection closed, the barrier never read, nothing forwarded
        assert statuses == probe.statuses, out
        if probe.refused:
            _check_400(out)
        assert closed, out
        assert seen == probe.up, seen
        return
    assert statuses == [*probe.statuses, 200], out
    want = [x for x in probe.up if not x.startswith("adm:")] + ["GET /barrier | host: a"]
    assert seen == want + [x for x in probe.up if x.startswith("adm:")], seen
    assert all(m.complete for m in up.messages + adm.messages)
    if mode != "general":
        # the bodiless requests to the catch-all route started task-free
        assert started >= 1, started


# --- chunked bodies that fail after the head went upstream -----------------------------------

BAD_CHUNKS = {
    "size_not_hex": b"z\r\nabc\r\n0\r\n\r\n",
    "size_space": b"3 \r\nabc\r\n0\r\n\r\n",
    "size_0x": b"0x3\r\nabc\r\n0\r\n\r\n",
    "size_overflow": b"FFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
    "extension_bare_lf": b"3;a\nabc\r\n0\r\n\r\n",
    "data_too_long": b"3\r\nabcX0\r\n\r\n",
    "trailer_obs_fold": b"3\r\nabc\r\n0\r\nX-T: a\r\n b\r\n\r\n",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(BAD_CHUNKS))
async def test_bad_chunked_body(name: str, mode: str) -> None:
    """A 400 that closes the connection; the upstream never gets a complete message (the head
    may have gone: that exchange is abandoned), nor the smuggled or the barrier request."""
    probe = Probe(P + b"Transfer-Encoding: chunked\r\n\r\n" + BAD_CHUNKS[name] + SM, [400])
    out, closed, up, adm, _, _ = await _run(mode, probe)
    assert [r.status for r in parse_responses(out)] == [400], out
    _check_400(out)
    assert closed
    assert [m.target for m in up.messages] in ([], [b"/p"]), up.messages
    assert not any(m.complete for m in up.messages) and adm.messages == []
    assert up.errors == []


# --- a Connection option removes only the client's own fields ---------------------------------


async def _one(mode: str, route: dict[str, Any], head: bytes, **cfg: Any) -> Message:
    """``head`` sent (one read) to a catch-all route with ``route``'s extra keys; the request
    the upstream received."""
    path = ServingPath("cold" if mode == "general" else "warm")
    async with raw_upstream() as up:
        config = _config(up.url, up.url)
        config["routes"][2].update(route)
        config.update(cfg)
        async with run_gateway(path.config(config)) as gw:
            await path.prepare(gw)
            hooks = hooks_for(asyncio.get_running_loop())
            lite = hooks.lite
            if mode == "fields":
                hooks.lite = None
            try:
                out, _ = await _send(gw.port, [head])
            finally:
                hooks.lite = lite
    assert [r.status for r in parse_responses(out)] == [200], out
    return up.messages[-1]


@pytest.mark.parametrize("mode", MODES)
async def test_connection_option_keeps_the_anonymous_marker(mode: str) -> None:
    """``Connection: X-Anonymous-Consumer`` from a client without a key: the anonymous
    consumer's X-Consumer-* fields still go with ``X-Anonymous-Consumer: true``, so an
    upstream cannot take them for a credential's."""
    m = await _one(
        mode,
        {"plugins": [{"name": "key_auth", "config": {"anonymous": "guest"}}]},
        G + b"Connection: X-Anonymous-Consumer, X-Consumer-Username, Host\r\n\r\n",
        consumers=[{"username": "guest"}],
    )
    assert m.header(b"x-anonymous-consumer") == b"true", m.headers
    assert m.header(b"x-consumer-username") == b"guest", m.headers
    assert m.header(b"host") == b"a", m.headers


@pytest.mark.parametrize("mode", MODES)
async def test_connection_option_keeps_a_plugins_field(mode: str) -> None:
    """A field a request hook set under a name the client's Connection nominates is the
    gateway's and goes upstream; the client's own nominated field does not."""
    plugin = {"name": "headers", "config": {"request": {"set": {"X-Gateway-Tag": "internal"}}}}
    m = await _one(
        mode,
        {"plugins": [plugin]},
        G + b"Connection: X-Gateway-Tag, X-Secret\r\nX-Gateway-Tag: evil\r\nX-Secret: s\r\n\r\n",
    )
    assert [v for k, v in m.headers if k == b"x-gateway-tag"] == [b"internal"], m.headers
    assert m.header(b"x-secret") is None, m.headers


# --- the lite head's own bytes ------------------------------------------------------------------


async def test_lite_mode_forwards_the_clients_lines() -> None:
    """The ``lite`` mode above is what it says: a plain head reaches the upstream in the
    client's spelling (and ``fields`` in the field-by-field one)."""
    probe = PROBES["plain"]
    _, _, up, _, _, _ = await _run("lite", probe)
    assert b"\r\nUser-Agent: t\r\n" in bytes(up.raw[-1]), up.raw
    _out, _, up, _, _, _ = await _run("fields", probe)
    assert b"\r\nuser-agent: t\r\n" in bytes(up.raw[-1]), up.raw

"""Request smuggling (CL.TE, TE.CL, TE.TE and friends), as a scanner would probe it.

Every case asserts both sides: what the client got (a 400 + close for ambiguous framing, or a
normal answer) and what the upstream actually received, byte for byte, so there is never a
second interpretation of one message between the gateway and the upstream.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.helpers import run_gateway
from tests.http.adv_helpers import (
    Message,
    RawUpstream,
    cfg_for,
    exchange,
    parse_responses,
    raw_upstream,
)

POST = b"POST /s HTTP/1.1\r\nHost: a\r\n"
CHUNKED_ABC = b"3\r\nabc\r\n0\r\n\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"


def _assert_400_close(out: bytes, closed: bool) -> None:
    resps = parse_responses(out)
    assert len(resps) == 1, out
    r = resps[0]
    assert r.complete
    assert r.status == 400, out
    assert r.header(b"connection") == b"close"
    assert r.header(b"content-type") == b"application/json"
    body = orjson.loads(r.body)
    assert body["status"] == 400 and body["code"] == "bad_request"
    assert closed, "the connection must be closed after a framing error"


def _canonical(msg: Message) -> None:
    """Exactly one framing header, in canonical form, and no hop-by-hop leftovers."""
    cl = [v for k, v in msg.headers if k == b"content-length"]
    te = [v for k, v in msg.headers if k == b"transfer-encoding"]
    assert len(cl) + len(te) <= 1, msg.headers
    if te:
        assert te == [b"chunked"]
    if cl:
        assert cl == [str(len(msg.body)).encode()]
    assert len([1 for k, _ in msg.headers if k == b"host"]) == 1


def _no_smuggled(up: RawUpstream, *, as_body: bool = False) -> None:
    """The smuggled request never reached the upstream as a request (``as_body``: its bytes
    may have, as the declared body of the carrying message)."""
    assert not any(b"/smuggled" in m.target for m in up.messages), up.messages
    if not as_body:
        assert not any(b"/smuggled" in raw for raw in up.raw), up.raw
    assert up.errors == []


# --- rejected before anything is forwarded --------------------------------------------------

REJECT_HEAD = {
    # TE.TE obfuscations that are not exactly "chunked"
    "te_chunked_twice": POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n" + CHUNKED_ABC,
    "te_xchunked": POST + b"Transfer-Encoding: xchunked\r\n\r\n" + CHUNKED_ABC,
    "te_vertical_tab": POST + b"Transfer-Encoding: chunked\x0b\r\n\r\n" + CHUNKED_ABC,
    "te_duplicate_fields": POST
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
    + CHUNKED_ABC,
    "te_identity_then_chunked": POST
    + b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n"
    + CHUNKED_ABC,
    "te_chunked_then_identity": POST
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"
    + CHUNKED_ABC,
    "te_gzip_chunked": POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + CHUNKED_ABC,
    "te_quoted": POST + b'Transfer-Encoding: "chunked"\r\n\r\n' + CHUNKED_ABC,
    "te_trailing_comma": POST + b"Transfer-Encoding: chunked,\r\n\r\n" + CHUNKED_ABC,
    "te_empty": POST + b"Transfer-Encoding: \r\n\r\n" + CHUNKED_ABC,
    "te_space_before_colon": POST + b"Transfer-Encoding : chunked\r\n\r\n" + CHUNKED_ABC,
    "te_obs_fold": POST + b"Transfer-Encoding:\r\n chunked\r\n\r\n" + CHUNKED_ABC,
    "te_in_http10": b"POST /s HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    + CHUNKED_ABC,
    "te_in_http10_with_cl": b"POST /s HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n" + CHUNKED_ABC,
    # CL.TE / TE.CL
    "cl_te": POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "te_cl": POST
    + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
    # Content-Length variants
    "cl_plus": POST + b"Content-Length: +3\r\n\r\nabc",
    "cl_negative": POST + b"Content-Length: -3\r\n\r\nabc",
    "cl_list_same": POST + b"Content-Length: 3, 3\r\n\r\nabc",
    "cl_list_space_comma": POST + b"Content-Length: 3 ,3\r\n\r\nabc",
    "cl_duplicate_same": POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "cl_duplicate_diff": POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl_2_pow_64": POST + b"Content-Length: 18446744073709551616\r\n\r\nabc",
    "cl_huge": POST + b"Content-Length: 99999999999999999999999999999\r\n\r\nabc",
    "cl_hex": POST + b"Content-Length: 0x3\r\n\r\nabc",
    "cl_inner_space": POST + b"Content-Length: 1 3\r\n\r\nabc",
    "cl_empty": POST + b"Content-Length: \r\n\r\nabc",
    "cl_vertical_tab": POST + b"Content-Length: 3\x0b\r\n\r\nabc",
    # header-section tricks
    "lf_in_value_hides_te": b"GET /s HTTP/1.1\r\nHost: a\r\nX: a\nTransfer-Encoding: chunked\r\n\r\n"
    + CHUNKED_ABC,
    "cr_in_value": b"GET /s HTTP/1.1\r\nHost: a\r\nX: a\rTransfer-Encoding: chunked\r\n\r\n",
    "bare_lf_line_endings": b"POST /s HTTP/1.1\nHost: a\nContent-Length: 3\n\nabc",
    "nul_in_header": POST + b"Content-Length: 3\x00\r\n\r\nabc",
    "header_without_colon": b"GET /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding chunked\r\n\r\n",
    # request line
    "tab_separator": b"GET\t/s HTTP/1.1\r\nHost: a\r\n\r\n",
    "lowercase_version": b"GET /s http/1.1\r\nHost: a\r\n\r\n",
    "http_1_2": b"GET /s HTTP/1.2\r\nHost: a\r\n\r\n",
    "http_2_0": b"GET /s HTTP/2.0\r\nHost: a\r\n\r\n",
    "http_0_9": b"GET /s\r\n\r\n",
    "absolute_form_userinfo": b"GET http://user@a/s HTTP/1.1\r\nHost: a\r\n\r\n",
    "absolute_form_bad_scheme": b"GET ftp://a/s HTTP/1.1\r\nHost: a\r\n\r\n",
    "missing_host_11": b"GET /s HTTP/1.1\r\n\r\n",
    "two_hosts": b"GET /s HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "host_with_userinfo": b"GET /s HTTP/1.1\r\nHost: evil@a\r\n\r\n",
    "host_with_path": b"GET /s HTTP/1.1\r\nHost: a/b\r\n\r\n",
    "fragment_in_target": b"GET /s#frag HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(REJECT_HEAD))
async def test_ambiguous_head_rejected_nothing_forwarded(name: str) -> None:
    async with raw_upstream() as up, run_gateway(cfg_for(up.url)) as gw:
        out, closed = await exchange(gw.port, REJECT_HEAD[name] + SMUGGLED)
        _assert_400_close(out, closed)
        # a valid request after it, answered: anything the refused one had let through
        # would have reached the upstream first (no sleep: the upstream's own answer)
        out, _ = await exchange(
            gw.port, b"GET /barrier HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        assert out.startswith(b"HTTP/1.1 200"), out
        assert [m.target for m in up.messages] == [b"/barrier"], up.raw
        assert len(up.raw) == 1 and up.errors == [], up.raw


# --- rejected while the body streams (the head already went upstream) ------------------------

REJECT_BODY = {
    "chunk_size_overflow": b"FFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
    "chunk_size_0x": b"0x3\r\nabc\r\n0\r\n\r\n",
    "chunk_size_negative": b"-3\r\nabc\r\n0\r\n\r\n",
    "chunk_size_plus": b"+3\r\nabc\r\n0\r\n\r\n",
    "chunk_size_space": b"3 \r\nabc\r\n0\r\n\r\n",
    "chunk_size_bare_lf": b"3\nabc\r\n0\r\n\r\n",
    "chunk_ext_bare_lf": b"3;ext\nabc\r\n0\r\n\r\n",
    "chunk_ext_bare_cr": b"3;a=b\rX\r\nabc\r\n0\r\n\r\n",
    "chunk_data_too_long": b"3\r\nabcX0\r\n\r\n",
    "chunk_data_bare_lf": b"3\r\nabc\n0\r\n\r\n",
    "last_chunk_bare_lf": b"3\r\nabc\r\n0\n\n",
    "trailer_content_length": b"3\r\nabc\r\n0\r\nContent-Length: 50\r\n\r\n",
    "trailer_obs_fold": b"3\r\nabc\r\n0\r\nX-T: a\r\n b\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(REJECT_BODY))
async def test_bad_chunked_body_rejected_upstream_never_sees_a_message(name: str) -> None:
    async with raw_upstream() as up, run_gateway(cfg_for(up.url)) as gw:
        data = POST + b"Transfer-Encoding: chunked\r\n\r\n" + REJECT_BODY[name] + SMUGGLED
        out, closed = await exchange(gw.port, data)
        _assert_400_close(out, closed)
        # the upstream connection that carried the partial message must be abandoned: a fresh
        # request goes over a new connection and is the only complete message ever seen
        out2, _ = await exchange(
            gw.port, b"GET /fresh HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        assert parse_responses(out2)[0].status == 200
        complete = up.complete
        assert [m.target for m in complete] == [b"/fresh"], up.messages
        assert all(b"/fresh" not in bytes(raw) for raw in up.raw[:-1])
        _no_smuggled(up)


async def test_missing_final_crlf_is_not_a_complete_message() -> None:
    async with raw_upstream() as up, run_gateway(cfg_for(up.url)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await reader.read(1)
        assert up.complete == []
        writer.write(b"\r\n")
        async with asyncio.timeout(3):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()
        assert len(up.complete) == 1 and up.complete[0].body == b"abc"
        _canonical(up.complete[0])


# --- accepted: one canonical interpretation is forwarded -------------------------------------

ACCEPT = {
    # RFC 9110 §5.5: OWS around a field value is not part of it; coding names are
    # case-insensitive (RFC 9112 §7)
    "te_trailing_space": (POST + b"Transfer-Encoding: chunked \r\n\r\n" + CHUNKED_ABC, b"abc"),
    "te_leading_spaces": (POST + b"Transfer-Encoding:   chunked\r\n\r\n" + CHUNKED_ABC, b"abc"),
    "te_tab": (POST + b"Transfer-Encoding:\tchunked\r\n\r\n" + CHUNKED_ABC, b"abc"),
    "te_mixed_case": (POST + b"Transfer-Encoding: ChUnKeD\r\n\r\n" + CHUNKED_ABC, b"abc"),
    # RFC 9110 §8.6: Content-Length = 1*DIGIT, so leading zeros are valid
    "cl_leading_zeros": (POST + b"Content-Length: 003\r\n\r\nabc", b"abc"),
    "cl_ows": (POST + b"Content-Length:  3 \r\n\r\nabc", b"abc"),
    "cl_zero": (POST + b"Content-Length: 0\r\n\r\n", b""),
    # an underscore field is an ordinary field, never framing (CGI-style upstreams that fold
    # "_" into "-" still see our single canonical Content-Length first)
    "cl_underscore_twin": (POST + b"Content-Length: 3\r\nContent_Length: 0\r\n\r\nabc", b"abc"),
    "chunk_extension": (
        POST + b"Transfer-Encoding: chunked\r\n\r\n3;name=val;x\r\nabc\r\n0;y=1\r\n\r\n",
        b"abc",
    ),
    "chunk_size_leading_zeros": (
        POST + b"Transfer-Encoding: chunked\r\n\r\n0003\r\nabc\r\n000\r\n\r\n",
        b"abc",
    ),
    "chunk_size_uppercase_hex": (
        POST + b"Transfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
        b"0123456789",
    ),
    "smuggled_request_in_cl_body": (
        POST + b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED),
        SMUGGLED,
    ),
    "smuggled_request_in_chunked_body": (
        POST
        + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
        SMUGGLED,
    ),
    "get_with_body_hiding_request": (
        b"GET /s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED),
        SMUGGLED,
    ),
}


@pytest.mark.parametrize("name", sorted(ACCEPT))
async def test_accepted_framing_is_forwarded_canonically(name: str) -> None:
    data, body = ACCEPT[name]
    async with raw_upstream() as up, run_gateway(cfg_for(up.url)) as gw:
        out, _ = await exchange(
            gw.port, data + b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        resps = parse_responses(out)
        assert [r.status for r in resps] == [200, 200], out
        assert all(r.complete for r in resps)
        assert [m.target for m in up.messages] == [b"/s", b"/last"], up.messages
        first = up.messages[0]
        assert first.complete and first.body == body
        _canonical(first)
        assert resps[0].body == b"ok:/s:%d" % len(body)
        _no_smuggled(up, as_body=True)


async def test_multiple_spaces_in_request_line_reserialised() -> None:
    """llhttp tolerates extra SP between request-line words (RFC 9112 §3 allows a recipient to
    split on whitespace); the gateway re-serialises the line, so the upstream sees exactly one
    canonical form and cannot disagree about the target."""
    async with raw_upstream() as up, run_gateway(cfg_for(up.url)) as gw:
        for line in (b"GET  /x HTTP/1.1", b"GET /x  HTTP/1.1"):
            out, _ = await exchange(gw.port, line + b"\r\nHost: a\r\nConnection: close\r\n\r\n")
            assert parse_responses(out)[0].status == 200
        assert len(up.raw) == 1  # keep-alive upstream connection reused
        lines = [ln for ln in bytes(up.raw[0]).split(b"\r\n") if ln.startswith(b"GET")]
        assert lines == [b"GET /x HTTP/1.1", b"GET /x HTTP/1.1"]


async def test_absolute_form_overrides_host_header() -> None:
    """RFC 9112 §3.2.2: with an absolute-form target the Host header is ignored and replaced by
    the target's authority — routing and the upstream agree on one host."""
    async with raw_upstream() as up, run_gateway(cfg_for(up.url)) as gw:
        out, _ = await exchange(
            gw.port,
            b"GET http://good.test:8080/x?q=1 HTTP/1.1\r\nHost: evil.test\r\n"
            b"Connection: close\r\n\r\n",
        )
        assert parse_responses(out)[0].status == 200
        m = up.messages[0]
        assert m.target == b"/x?q=1"
        assert [v for k, v in m.headers if k == b"host"] == [b"good.test:8080"]
        assert b"evil" not in bytes(up.raw[0])


async def test_absolute_form_host_routing_matches_forwarded_host() -> None:
    async with raw_upstream() as up:
        cfg = cfg_for(up.url)
        cfg["routes"][0]["match"]["hosts"] = ["good.test"]
        async with run_gateway(cfg) as gw:
            out, _ = await exchange(
                gw.port, b"GET http://evil.test/x HTTP/1.1\r\nHost: good.test\r\n\r\n"
            )
            assert parse_responses(out)[0].status == 404
            out, _ = await exchange(
                gw.port, b"GET http://good.test/x HTTP/1.1\r\nHost: evil.test\r\n\r\n"
            )
            assert parse_responses(out)[0].status == 200
            assert [v for k, v in up.messages[0].headers if k == b"host"] == [b"good.test"]


async def test_pipelined_request_after_rejected_one_is_never_forwarded() -> None:
    async with raw_upstream() as up, run_gateway(cfg_for(up.url)) as gw:
        data = (
            b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
            + POST
            + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            + SMUGGLED
        )
        out, closed = await exchange(gw.port, data)
        resps = parse_responses(out)
        assert [r.status for r in resps] == [200, 400]
        assert resps[1].header(b"connection") == b"close"
        assert closed
        assert [m.target for m in up.messages] == [b"/first"]
        _no_smuggled(up)


async def test_request_trailers_cannot_inject_framing_routing_or_auth() -> None:
    """RFC 9110 §6.5.1: trailers must not carry framing, routing, authentication or request
    modifiers; an upstream that merges trailers into headers must never see such fields from
    a client."""
    async with raw_upstream() as up, run_gateway(cfg_for(up.url)) as gw:
        data = (
            POST + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n"
            b"Host: evil.test\r\nAuthorization: Bearer forged\r\nCookie: s=1\r\n"
            b"X-Forwarded-For: 6.6.6.6\r\nContent-Type: text/evil\r\nX-Checksum: ok\r\n\r\n"
        )
        out, _ = await exchange(gw.port, data)
        assert parse_responses(out)[0].status == 200
        m = up.complete[0]
        assert m.body == b"abc"
        assert m.trailers == [(b"x-checksum", b"ok")]
        raw = bytes(up.raw[0]).lower()
        for bad in (b"evil.test", b"forged", b"s=1", b"6.6.6.6", b"text/evil"):
            assert bad not in raw


async def test_client_eof_mid_body_is_not_forwarded_as_complete() -> None:
    async with raw_upstream() as up, run_gateway(cfg_for(up.url)) as gw:
        out, closed = await exchange(
            gw.port, POST + b"Content-Length: 10\r\n\r\nabc", half_close=True, timeout=3
        )
        assert closed
        resps = parse_responses(out)
        assert [r.status for r in resps] == [400]
        assert up.complete == []
        out, closed = await exchange(
            gw.port,
            POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            half_close=True,
            timeout=3,
        )
        assert closed
        assert [r.status for r in parse_responses(out)] == [400]
        assert up.complete == []


async def test_upgrade_refused_does_not_open_a_raw_channel() -> None:
    """WebSocket smuggling: an upgrade the upstream refuses must not leave a tunnel through
    which the client talks raw HTTP to the upstream."""

    async def refuse(msg: Message, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")

    async with raw_upstream(refuse) as up, run_gateway(cfg_for(up.url)) as gw:
        data = (
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 1337\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            + SMUGGLED
        )
        out, closed = await exchange(gw.port, data)
        resps = parse_responses(out)
        assert [r.status for r in resps] == [426]
        assert closed
        assert [m.target for m in up.messages] == [b"/ws"]
        _no_smuggled(up)


async def test_unsolicited_101_is_not_relayed() -> None:
    """An upstream that answers 101 to a request that did not ask to upgrade is broken
    (RFC 9110 §15.2.2); relaying it would leave the client and gateway in different
    protocols."""

    async def switch(msg: Message, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n"
        )

    async with raw_upstream(switch) as up, run_gateway(cfg_for(up.url)) as gw:
        out, closed = await exchange(
            gw.port,
            b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n"
            b"Connection: close\r\n\r\n",
        )
        resps = parse_responses(out)
        # answered 502, and both connections end there (http/upgrade.py): the pipelined
        # request behind it is never read
        assert [r.status for r in resps] == [502], out
        assert closed
        assert [m.target for m in up.messages] == [b"/x"]
        assert len(up.raw) == 1

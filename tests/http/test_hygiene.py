"""Protocol hygiene (RFC 9110/9112), each point driven over a raw socket.

The rules about what crosses the gateway run on both serving paths (the ``path`` fixture:
``cold``, the general path; ``warm``, the task-free one), which must agree."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import (
    WARM_ANSWER,
    ServingPath,
    is_warm_request,
    raw_request,
    raw_upstream,
    run_gateway,
    run_upstream,
    simple_config,
)


def _status(out: bytes) -> int:
    assert out.startswith(b"HTTP/1.1 "), out[:80]
    return int(out[9:12])


def _body(out: bytes) -> dict:  # type: ignore[type-arg]
    return orjson.loads(out.split(b"\r\n\r\n", 1)[1])


BAD = {
    "cl_and_te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "dup_cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    "invalid_cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3x\r\n\r\nabc",
    "unknown_te": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "obs_fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n",
    "bare_lf": b"GET / HTTP/1.1\nHost: a\n\n",
    "nul_header": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
    "ctl_target": b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n",
    "missing_host": b"GET / HTTP/1.1\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "http09": b"GET /\r\n\r\n",
    # a refused path need not close the connection: the client asks to (no read timeout)
    "encoded_slash": b"GET /a%2Fb HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "encoded_backslash": b"GET /a%5cb HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "encoded_nul": b"GET /a%00b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "space_before_colon": b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
async def test_ambiguous_framing_is_400_and_close(name: str) -> None:
    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        out = await raw_request(gw.port, BAD[name])
        assert _status(out) == 400, out
        if not name.startswith("encoded"):  # framing errors close; a refused path need not
            assert b"connection: close" in out.lower()
        assert _body(out)["status"] == 400
        assert up.requests == []


async def test_limits_431_414() -> None:
    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"
        assert _status(await raw_request(gw.port, big)) == 431
        many = (
            b"GET / HTTP/1.1\r\nHost: a\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(120))
            + b"\r\n"
        )
        assert _status(await raw_request(gw.port, many)) == 431
        long = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
        assert _status(await raw_request(gw.port, long)) == 414


async def test_route_body_limit_413() -> None:
    async with run_upstream() as up, run_gateway(simple_config(up.url, max_body_bytes=10)) as gw:
        # Connection: close, so each answer is read to the end without waiting out a timeout
        req = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\nConnection: close\r\n\r\n"
        req += b"x" * 20
        assert _status(await raw_request(gw.port, req)) == 413
        chunked = (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"
        )
        assert _status(await raw_request(gw.port, chunked)) == 413


async def test_hop_by_hop_never_cross_either_way(path: ServingPath) -> None:
    async def handler(req: Request) -> Response:
        h = Headers()
        h.set("x-seen", ",".join(k for k, _ in req.headers))
        h.set("connection", "x-up-private")
        h.set("x-up-private", "secret")
        h.set("keep-alive", "timeout=5")
        h.set("proxy-connection", "keep-alive")
        return Response(200, h, b"ok")

    async with (
        run_upstream(handler) as up,
        run_gateway(path.config(simple_config(up.url))) as gw,
    ):
        await path.prepare(gw)
        req = (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\n"
            b"X-Private: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\n"
            b"TE: trailers\r\nUpgrade-Insecure-Requests: 1\r\nX-Keep: 1\r\nConnection: close\r\n\r\n"
        )
        out = await raw_request(gw.port, req)
        assert _status(out) == 200
        path.assert_served(1)
        head = out.split(b"\r\n\r\n")[0].lower()
        seen = next(ln for ln in head.split(b"\r\n") if ln.startswith(b"x-seen:"))
        for hop in (b"x-private", b"keep-alive", b"proxy-connection", b"te", b"connection"):
            assert hop not in seen.split(b": ", 1)[1].split(b","), seen
        assert b"x-keep" in seen
        assert b"x-up-private" not in head
        assert b"keep-alive" not in head
        assert b"proxy-connection" not in head


async def test_field_values_lose_trailing_whitespace_both_ways(path: ServingPath) -> None:
    """RFC 9110 §5.5: OWS around a field value is not part of it (llhttp drops the leading
    OWS only)."""

    async def handler(req: Request) -> Response:
        h = Headers()
        h.set("x-seen", repr(req.headers.get_raw(b"x-pad")))
        return Response(200, h, b"ok")

    async with (
        run_upstream(handler) as up,
        run_gateway(path.config(simple_config(up.url))) as gw,
    ):
        await path.prepare(gw)
        out = await raw_request(
            gw.port,
            b"GET / HTTP/1.1\r\nHost: a \r\nX-Pad: \t1 2 \t \r\nConnection: close\r\n\r\n",
        )
        assert _status(out) == 200, out
        assert b"x-seen: b'1 2'\r\n" in out.lower()
        path.assert_served(1)


async def test_x_forwarded_untrusted_replaced_trusted_appended(path: ServingPath) -> None:
    async with run_upstream() as up:
        cfg = path.config(simple_config(up.url))
        async with run_gateway(cfg) as gw:
            await path.prepare(gw)
            req = (
                b"GET / HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-For: 6.6.6.6\r\n"
                b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
            )
            hdrs = dict(_body(await raw_request(gw.port, req))["headers"])
            assert hdrs["x-forwarded-for"] == "127.0.0.1"
            assert hdrs["x-forwarded-proto"] == "http"
            assert hdrs["x-forwarded-host"] == "api.test"
            path.assert_served(1)
        cfg["server"] = {"trusted_proxies": ["127.0.0.0/8"]}
        async with run_gateway(cfg) as gw:
            await path.prepare(gw)
            hdrs = dict(_body(await raw_request(gw.port, req))["headers"])
            assert hdrs["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
            assert hdrs["x-forwarded-proto"] == "https"
            assert hdrs["x-forwarded-host"] == "api.test"
            path.assert_served(1)


async def test_path_normalised_before_routing_and_forwarding() -> None:
    async with run_upstream() as up:
        cfg = {
            "upstreams": {"u": {"targets": [{"url": up.url}]}},
            "routes": [{"name": "pub", "match": {"paths": ["/public"]}, "upstream": "u"}],
        }
        async with run_gateway(cfg) as gw:
            for raw in (b"/public/../admin", b"/public/%2e%2e/admin", b"/public/.%2E/admin"):
                out = await raw_request(
                    gw.port, b"GET " + raw + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                )
                assert _status(out) == 404, raw
            out = await raw_request(
                gw.port,
                b"GET //public/./a//b/../c?q=%2F..%2f HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            data = _body(out)
            assert data["path"] == "/public/a/c"
            assert data["query"] == "q=%2F..%2f"


async def test_encoded_slash_allowed_per_route(path: ServingPath) -> None:
    async with (
        run_upstream() as up,
        run_gateway(path.config(simple_config(up.url, allow_encoded_slashes=True))) as gw,
    ):
        await path.prepare(gw)
        out = await raw_request(
            gw.port, b"GET /a%2fb HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        assert _status(out) == 200
        assert _body(out)["path"] == "/a%2Fb"
        path.assert_served(1)


async def test_slowloris_closed_others_unaffected() -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url)
        cfg["server"] = {"limits": {"header_timeout": "300ms"}}
        async with run_gateway(cfg) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")
            await writer.drain()
            fast = await raw_request(
                gw.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            assert _status(fast) == 200
            async with asyncio.timeout(3):
                data = await reader.read()
            assert data.startswith(b"HTTP/1.1 408")
            writer.close()


async def test_trickled_head_after_a_keep_alive_request_gets_408() -> None:
    # the header timeout runs from the first incomplete read of a head, also on a connection
    # that served a request before (its idle timer gives way), and trickling bytes does not
    # extend it
    async with run_upstream() as up:
        cfg = simple_config(up.url)
        cfg["server"] = {"limits": {"header_timeout": "1s", "idle_timeout": "30s"}}
        async with run_gateway(cfg) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            n = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(n)
            loop = asyncio.get_running_loop()
            started = loop.time()
            writer.write(b"GET / HTTP/1.1\r\n")
            for i in range(3):  # a header line every 250 ms, the last at 750 ms
                await asyncio.sleep(0.25)
                writer.write(b"X-%d: y\r\n" % i)
            async with asyncio.timeout(5):
                data = await reader.read()
            elapsed = loop.time() - started
            assert data.startswith(b"HTTP/1.1 408"), data
            # from the first partial read (~1 s), not from the last one (>= 1.75 s); the
            # margin absorbs a loaded machine's scheduling delays
            assert elapsed < 1.7, elapsed
            writer.close()


async def test_upstream_errors_are_json_502_504() -> None:
    from tests.helpers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    async with run_gateway(simple_config(dead)) as gw:
        out = await raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert _status(out) == 502
        assert _body(out)["status"] == 502

    async def hang(req: Request) -> Response:
        await asyncio.sleep(5)
        return Response(200)

    async with run_upstream(hang) as up:
        cfg = simple_config(up.url)
        cfg["upstreams"]["u"]["timeouts"] = {"read": "200ms", "total": "300ms"}
        async with run_gateway(cfg) as gw:
            out = await raw_request(
                gw.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            assert _status(out) == 504


async def test_upstream_4xx_5xx_pass_through_untouched(path: ServingPath) -> None:
    async def teapot(req: Request) -> Response:
        if req.path.startswith("/__"):
            return Response(200, Headers(), b"warm")
        return Response(418, Headers([(b"x-u", b"1")]), b"i am a teapot")

    async with (
        run_upstream(teapot) as up,
        run_gateway(path.config(simple_config(up.url))) as gw,
    ):
        await path.prepare(gw)
        out = await raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert _status(out) == 418
        assert out.endswith(b"i am a teapot")
        assert b"x-u: 1\r\n" in out.lower()
        path.assert_served(1)


async def test_stalled_request_body_gets_408_slow_body_does_not() -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url)
        cfg["server"] = {"limits": {"body_timeout": "300ms"}}
        async with run_gateway(cfg) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
            await writer.drain()
            async with asyncio.timeout(3):
                out = await reader.read()
            writer.close()
            assert _status(out) == 408, out
            assert b"connection: close" in out.lower()
            # a body that keeps arriving, slower than the timeout in total, is fine
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\nConnection: close\r\n\r\n"
            )
            for i in range(8):
                writer.write(b"%d" % i)
                await writer.drain()
                await asyncio.sleep(0.1)
            async with asyncio.timeout(3):
                out = await reader.read()
            writer.close()
            assert _status(out) == 200 and b'"body":"01234567"' in out


async def test_x_real_ip_port_and_prefix_like_kong(path: ServingPath) -> None:
    async with run_upstream() as up:
        cfg = path.config(simple_config(up.url, strip_prefix=True, match={"paths": ["/api"]}))
        async with run_gateway(cfg) as gw:
            await path.prepare(gw)
            req = (
                b"GET /api/users HTTP/1.1\r\nHost: a\r\nX-Real-IP: 6.6.6.6\r\n"
                b"X-Forwarded-Prefix: /evil\r\nX-Forwarded-Port: 1\r\nConnection: close\r\n\r\n"
            )
            data = _body(await raw_request(gw.port, req))
            hdrs = dict(data["headers"])
            assert data["path"] == "/users"
            assert hdrs["x-real-ip"] == "127.0.0.1"
            assert hdrs["x-forwarded-port"] == str(gw.port)
            assert hdrs["x-forwarded-prefix"] == "/api"
            path.assert_served(1)


# --- relay rules on both serving paths -------------------------------------------------------


def _scripted(response: bytes, heads: list[bytes]) -> object:
    """A raw upstream handler answering warm-up requests, and every other request with
    ``response`` (keeping the connection); the heads it was sent go to ``heads``."""

    async def handler(head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        if is_warm_request(head):
            w.write(WARM_ANSWER)
        elif head.startswith(b"GET /next "):
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        else:
            heads.append(head)
            w.write(response)
        await w.drain()
        return True

    return handler


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for line in head.split(b"\r\n")[1:]:
        if line:
            k, _, v = line.partition(b":")
            out.append((k.strip().lower(), v.strip()))
    return out


def _values(head: bytes, name: bytes) -> list[bytes]:
    return [v for k, v in _fields(head) if k == name]


async def _relay(
    path: ServingPath, response: bytes, request: bytes, **route: object
) -> tuple[bytes, list[bytes], int]:
    """``request`` (then a closing GET /next on the same connection) through a gateway whose
    upstream answers ``response``; returns what the client got, the heads the upstream got
    and the gateway's port."""
    heads: list[bytes] = []
    async with raw_upstream(_scripted(response, heads)) as url:  # type: ignore[arg-type]
        async with run_gateway(path.config(simple_config(url, **route))) as gw:
            await path.prepare(gw)
            out = await raw_request(
                gw.port, request + b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            # the request under test and /next, pipelined behind it: warm, the upstream
            # connection is back in the pool before /next is served
            path.assert_served(2)
            return out, heads, gw.port


async def test_via_is_appended_both_ways(path: ServingPath) -> None:
    """RFC 9110 §7.6.3: the gateway appends itself to the Via of the request (with the
    client's protocol version) and of the response, after what was there."""
    response = b"HTTP/1.1 200 OK\r\nVia: 1.1 upstream-cache\r\nContent-Length: 2\r\n\r\nok"
    request = b"GET /x HTTP/1.1\r\nHost: a\r\nVia: 1.0 client-proxy\r\n\r\n"
    out, heads, _ = await _relay(path, response, request)
    first = out.split(b"\r\n\r\n", 1)[0]
    assert b", ".join(_values(first, b"via")) == b"1.1 upstream-cache, 1.1 portway", out
    assert b", ".join(_values(heads[0], b"via")) == b"1.0 client-proxy, 1.1 portway"


@pytest.mark.parametrize("preserve", [False, True])
async def test_host_is_the_targets_unless_preserved(path: ServingPath, preserve: bool) -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    request = b"GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n"
    heads: list[bytes] = []
    async with raw_upstream(_scripted(response, heads)) as url:  # type: ignore[arg-type]
        cfg = path.config(simple_config(url, preserve_host=preserve))
        async with run_gateway(cfg) as gw:
            await path.prepare(gw)
            out = await raw_request(gw.port, request[:-2] + b"Connection: close\r\n\r\n")
            assert _status(out) == 200
            path.assert_served(1)
    want = b"api.test" if preserve else url.removeprefix("http://").encode()
    assert _values(heads[0], b"host") == [want]
    assert _values(heads[0], b"x-forwarded-host") == [b"api.test"]


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"PATCH"])
async def test_bodiless_request_with_a_body_method_says_content_length_0(
    path: ServingPath, method: bytes
) -> None:
    """A POST/PUT/PATCH without a body is forwarded with ``Content-Length: 0`` (RFC 9110
    §8.6: a user agent should send it; some upstreams wait for a body otherwise)."""
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    out, heads, _ = await _relay(path, response, method + b" /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 2, out
    assert len(heads) == 1 and _values(heads[0], b"content-length") == [b"0"], heads


NO_BODY = {
    "204": (b"GET", b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"),
    "204_with_length": (b"GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-A: 1\r\n\r\n"),
    "304": (b"GET", b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\nX-A: 1\r\n\r\n'),
    "304_with_length": (
        b"GET",
        b'HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: "e"\r\nX-A: 1\r\n\r\n',
    ),
    "head_length": (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-A: 1\r\n\r\n"),
    "head_chunked": (b"HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"),
}


@pytest.mark.parametrize("case", sorted(NO_BODY))
async def test_no_body_statuses_carry_no_body_and_keep_the_connection(
    path: ServingPath, case: str
) -> None:
    """RFC 9110 §6.4.1: no content after a 204, a 304 or a response to HEAD, whatever its
    framing fields say; the next response on the connection follows right after the head."""
    method, response = NO_BODY[case]
    out, _, _ = await _relay(path, response, method + b" /x HTTP/1.1\r\nHost: a\r\n\r\n")
    first, sep, rest = out.partition(b"\r\n\r\n")
    assert sep and _values(first, b"x-a") == [b"1"], out
    assert _values(first, b"transfer-encoding") == [] or method == b"HEAD", out
    if case == "204":
        assert _values(first, b"content-length") == [], out  # none added (RFC 9110 §8.6)
    # nothing between this head and the next response
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), out
    assert rest.endswith(b"\r\n\r\nok")


async def test_early_hints_relayed_without_connection_fields(path: ServingPath) -> None:
    """100 and 102 answer this connection only; a 103 is relayed minus its hop-by-hop fields
    and those its own Connection names (RFC 9110 §7.6.1)."""
    response = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 102 Processing\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: x-hint\r\n"
        b"X-Hint: private\r\nKeep-Alive: timeout=5\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    )
    out, _, _ = await _relay(path, response, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    hints, _, rest = out.partition(b"\r\n\r\n")
    assert hints.startswith(b"HTTP/1.1 103 Early Hints\r\n"), out
    assert _fields(hints) == [(b"link", b"</a.css>; rel=preload")], out
    assert rest.startswith(b"HTTP/1.1 201 Created\r\n"), out
    assert b"HTTP/1.1 100" not in out and b"HTTP/1.1 102" not in out


# --- the same rules for HTTP/2 clients -------------------------------------------------------


@pytest.mark.parametrize("case", ["fields", "early_hints", "no_body"])
async def test_relay_rules_hold_for_http2_clients(path: ServingPath, case: str) -> None:
    """HTTP/2 requests (the default engine, libnghttp2) take the task-free path on a warm pool
    (``proxy/fastsink.py``), reusing the pooled upstream connection, and the general path on
    a cold one, opening their own. Either way the same rules as above: hop-by-hop and Connection-named fields dropped, Via
    appended, X-Forwarded-* and Host set, a 103 relayed without them, no body on a 204."""
    import h2.events

    from tests.http.test_h2 import H2Client

    responses = {
        "fields": b"HTTP/1.1 200 OK\r\nConnection: x-up\r\nX-Up: private\r\nKeep-Alive: 5\r\n"
        b"Via: 1.1 upstream-cache\r\nContent-Length: 2\r\n\r\nok",
        "early_hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n"
        b"Connection: x-hint\r\nX-Hint: private\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "no_body": b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
    }
    heads: list[bytes] = []
    fresh: list[bool] = []

    async def handler(head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        if is_warm_request(head):
            w.write(WARM_ANSWER)
        else:
            heads.append(head)
            fresh.append(n == 1)
            w.write(responses[case])
        await w.drain()
        return True

    async with raw_upstream(handler) as url:
        async with run_gateway(path.config(simple_config(url))) as gw:
            await path.prepare(gw)
            c = await H2Client.open(gw.port)
            try:
                sid = c.request("GET", "/x")
                await c.flush()
                await c.wait(sid)
            finally:
                c.close()
            path.assert_served(1)
    # warm: the pooled connection carried the request; cold: a connection of its own
    assert fresh == [not path.warm]
    r = c.responses[sid]
    fields = [(k.lower(), v) for k, v in r["headers"]]
    names = {k for k, _ in fields}
    assert not names & {b"connection", b"keep-alive", b"x-up", b"transfer-encoding"}, fields
    if case == "fields":
        assert (r["status"], bytes(r["body"])) == (200, b"ok")
        assert dict(fields)[b"via"] == b"1.1 upstream-cache, 1.1 portway"
        sent = _fields(heads[0])
        assert (b"host", b"example.test") in sent  # :authority (upstreams preserve Host)
        assert (b"x-forwarded-host", b"example.test") in sent
        assert (b"x-forwarded-proto", b"http") in sent
        assert (b"via", b"2 portway") in sent  # RFC 9110 §7.6.3: HTTP/2 is "2"
    elif case == "early_hints":
        hints = [e for e in c.events if isinstance(e, h2.events.InformationalResponseReceived)]
        assert len(hints) == 1, c.events
        assert [(k, v) for k, v in hints[0].headers if not k.startswith(b":")] == [
            (b"link", b"</a.css>; rel=preload")
        ]
        assert (r["status"], bytes(r["body"])) == (200, b"ok")
    else:
        assert (r["status"], bytes(r["body"])) == (204, b"")
        assert dict(fields)[b"x-a"] == b"1"

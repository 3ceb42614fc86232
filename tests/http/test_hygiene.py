"""Protocol hygiene (RFC 9110/9112), each point driven over a raw socket."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import raw_request, run_gateway, run_upstream, simple_config


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
    "encoded_slash": b"GET /a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n",
    "encoded_backslash": b"GET /a%5cb HTTP/1.1\r\nHost: a\r\n\r\n",
    "encoded_nul": b"GET /a%00b HTTP/1.1\r\nHost: a\r\n\r\n",
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
        req = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n" + b"x" * 20
        assert _status(await raw_request(gw.port, req)) == 413
        chunked = (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"
        )
        assert _status(await raw_request(gw.port, chunked)) == 413


async def test_hop_by_hop_never_cross_either_way() -> None:
    async def handler(req: Request) -> Response:
        h = Headers()
        h.set("x-seen", ",".join(k for k, _ in req.headers))
        h.set("connection", "x-up-private")
        h.set("x-up-private", "secret")
        h.set("keep-alive", "timeout=5")
        h.set("proxy-connection", "keep-alive")
        return Response(200, h, b"ok")

    async with run_upstream(handler) as up, run_gateway(simple_config(up.url)) as gw:
        req = (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\n"
            b"X-Private: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\n"
            b"TE: trailers\r\nUpgrade-Insecure-Requests: 1\r\nX-Keep: 1\r\nConnection: close\r\n\r\n"
        )
        out = await raw_request(gw.port, req)
        assert _status(out) == 200
        head = out.split(b"\r\n\r\n")[0].lower()
        seen = next(ln for ln in head.split(b"\r\n") if ln.startswith(b"x-seen:"))
        for hop in (b"x-private", b"keep-alive", b"proxy-connection", b"te", b"connection"):
            assert hop not in seen.split(b": ", 1)[1].split(b","), seen
        assert b"x-keep" in seen
        assert b"x-up-private" not in head
        assert b"keep-alive" not in head
        assert b"proxy-connection" not in head


async def test_field_values_lose_trailing_whitespace_both_ways() -> None:
    """RFC 9110 §5.5: OWS around a field value is not part of it (llhttp drops the leading
    OWS only)."""

    async def handler(req: Request) -> Response:
        h = Headers()
        h.set("x-seen", repr(req.headers.get_raw(b"x-pad")))
        return Response(200, h, b"ok")

    async with run_upstream(handler) as up, run_gateway(simple_config(up.url)) as gw:
        for _ in range(2):  # the second on a pooled connection (the task-free path)
            out = await raw_request(
                gw.port,
                b"GET / HTTP/1.1\r\nHost: a \r\nX-Pad: \t1 2 \t \r\nConnection: close\r\n\r\n",
            )
            assert _status(out) == 200, out
            assert b"x-seen: b'1 2'\r\n" in out.lower()


async def test_x_forwarded_untrusted_replaced_trusted_appended() -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url)
        async with run_gateway(cfg) as gw:
            req = (
                b"GET / HTTP/1.1\r\nHost: api.test\r\nX-Forwarded-For: 6.6.6.6\r\n"
                b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
            )
            hdrs = dict(_body(await raw_request(gw.port, req))["headers"])
            assert hdrs["x-forwarded-for"] == "127.0.0.1"
            assert hdrs["x-forwarded-proto"] == "http"
            assert hdrs["x-forwarded-host"] == "api.test"
        cfg["server"] = {"trusted_proxies": ["127.0.0.0/8"]}
        async with run_gateway(cfg) as gw:
            hdrs = dict(_body(await raw_request(gw.port, req))["headers"])
            assert hdrs["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
            assert hdrs["x-forwarded-proto"] == "https"


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


async def test_encoded_slash_allowed_per_route() -> None:
    async with (
        run_upstream() as up,
        run_gateway(simple_config(up.url, allow_encoded_slashes=True)) as gw,
    ):
        out = await raw_request(
            gw.port, b"GET /a%2fb HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        assert _status(out) == 200
        assert _body(out)["path"] == "/a%2Fb"


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
        cfg["server"] = {"limits": {"header_timeout": "500ms", "idle_timeout": "30s"}}
        async with run_gateway(cfg) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            n = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(n)
            loop = asyncio.get_running_loop()
            started = loop.time()
            writer.write(b"GET / HTTP/1.1\r\n")
            for i in range(3):  # a header line every 150 ms, the last at 450 ms
                await asyncio.sleep(0.15)
                writer.write(b"X-%d: y\r\n" % i)
            async with asyncio.timeout(3):
                data = await reader.read()
            elapsed = loop.time() - started
            assert data.startswith(b"HTTP/1.1 408"), data
            # from the first partial read (~0.5 s), not from the last one (>= 0.95 s)
            assert elapsed < 0.85, elapsed
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


async def test_upstream_4xx_5xx_pass_through_untouched() -> None:
    async def teapot(req: Request) -> Response:
        return Response(418, Headers([(b"x-u", b"1")]), b"i am a teapot")

    async with run_upstream(teapot) as up, run_gateway(simple_config(up.url)) as gw:
        out = await raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert _status(out) == 418
        assert out.endswith(b"i am a teapot")


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


async def test_x_real_ip_port_and_prefix_like_kong() -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url, strip_prefix=True, match={"paths": ["/api"]})
        async with run_gateway(cfg) as gw:
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

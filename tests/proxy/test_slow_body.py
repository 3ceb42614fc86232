"""Issue 15 point 2: a client stalling its request body gets 408 at body_timeout, which is
the client's fault (never an upstream failure: no passive-health mark, no 504), the upstream
connection is not reused, no task exception goes unretrieved, and ``request_buffering``
reads small bodies before any upstream connection is taken. Bodies never take the task-free
path; "warm" runs with an idle pooled connection, "cold" without."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import orjson
import pytest

from tests.helpers import http_get, run_gateway, run_upstream
from tests.http.adv_helpers import parse_responses


def _cfg(url: str, **route: Any) -> dict[str, Any]:
    return {
        "server": {"limits": {"body_timeout": "0.5s"}},
        "upstreams": {
            "u": {
                "targets": [{"url": url}],
                # shorter than body_timeout: it used to fire first and blame the upstream
                "timeouts": {"read": "0.2s", "total": "5s"},
                "health": {"passive": {"unhealthy_after": 1, "recover_after": "60s"}},
            }
        },
        "routes": [{"name": "r", "match": {"paths": ["/"]}, "upstream": "u", **route}],
    }


async def _stall(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nx")
    try:
        async with asyncio.timeout(5):
            return await reader.read(65536)
    finally:
        writer.close()


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.parametrize("buffering", [False, True], ids=["streamed", "buffered"])
async def test_stalled_body_is_a_client_408(warm: bool, buffering: bool) -> None:
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, c: unretrieved.append(c))
    route = {"request_buffering": {"max": "1MiB"}} if buffering else {}
    try:
        async with run_upstream() as up, run_gateway(_cfg(up.url, **route)) as gw:
            if warm:
                assert (await http_get(gw.url + "/warm"))[0] == 200
            seen = len(up.requests)
            outs = await asyncio.gather(*(_stall(gw.port) for _ in range(3)))
            for out in outs:
                resp = parse_responses(out)[0]
                assert resp.status == 408, out
                body = orjson.loads(resp.body)
                assert body["code"] == "request_timeout" and body["request_id"]
            if buffering:
                # read before any upstream connection was taken: the upstream saw nothing
                assert len(up.requests) == seen
            # not counted against the upstream: with unhealthy_after 1 a single 504 or
            # failure would have marked it down and the next request would get a 503
            for _ in range(3):
                assert (await http_get(gw.url + "/after"))[0] == 200
            target = gw.gateway.graph.upstreams["u"].targets[0]
            assert target.in_flight == 0
        gc.collect()
        await asyncio.sleep(0)
        assert not [c for c in unretrieved if "never retrieved" in str(c.get("message"))]
    finally:
        loop.set_exception_handler(old)


async def test_request_buffering_sends_the_whole_body_with_a_length() -> None:
    async with run_upstream() as up:
        cfg = _cfg(up.url, request_buffering={"max": "1KiB"})
        async with run_gateway(cfg) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(
                b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )
            out = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            resp = parse_responses(out)[0]
            echoed = orjson.loads(resp.body)
            assert echoed["body"] == "hello"
            names = {k for k, _ in echoed["headers"]}
            assert "content-length" in names and "transfer-encoding" not in names


async def test_stalled_http2_body_is_a_client_408() -> None:
    import h2.config
    import h2.connection
    import h2.events

    async with run_upstream() as up, run_gateway(_cfg(up.url)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        c = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        c.initiate_connection()
        sid = c.get_next_available_stream_id()
        c.send_headers(
            sid,
            [
                (b":method", b"POST"),
                (b":path", b"/slow"),
                (b":scheme", b"http"),
                (b":authority", b"a"),
                (b"content-length", b"10"),
            ],
        )
        c.send_data(sid, b"x")
        writer.write(c.data_to_send())
        status, body = 0, b""
        async with asyncio.timeout(5):
            while True:
                data = await reader.read(65536)
                assert data
                events = c.receive_data(data)
                writer.write(c.data_to_send())
                for ev in events:
                    if isinstance(ev, h2.events.ResponseReceived):
                        status = int(dict(ev.headers)[b":status"])
                    elif isinstance(ev, h2.events.DataReceived):
                        body += ev.data
                if status and any(
                    isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset) for ev in events
                ):
                    break
        writer.close()
        assert status == 408, body
        assert orjson.loads(body)["code"] == "request_timeout"
        for _ in range(2):
            assert (await http_get(gw.url + "/after"))[0] == 200


async def test_request_buffering_streams_a_longer_chunked_body_whole() -> None:
    async with run_upstream() as up:
        async with run_gateway(_cfg(up.url, request_buffering={"max": "1KiB"})) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            chunks = [bytes([65 + i]) * 600 for i in range(3)]
            writer.write(
                b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: close\r\n\r\n"
                + b"".join(b"258\r\n" + c + b"\r\n" for c in chunks)
                + b"0\r\n\r\n"
            )
            out = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            echoed = orjson.loads(parse_responses(out)[0].body)
            assert echoed["body"] == b"".join(chunks).decode()
            names = {k for k, _ in echoed["headers"]}
            assert "transfer-encoding" in names  # longer than max: streamed, still chunked

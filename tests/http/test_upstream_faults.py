"""Fault drills against the upstream side: every way an upstream can break an exchange, and
what the client sees (a precise JSON 5xx before the head, an aborted connection after it —
never a truncated body that looks complete) and whether the pooled connection is reused."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from tests.helpers import ServingPath, run_gateway, warmable
from tests.http.adv_helpers import (
    cfg_for,
    exchange,
    parse_responses,
    read_request_head,
    scripted_upstream,
)

GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
GET_CLOSE = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
#: a warm exchange that fails before the response head is handed back to the task, which
#: answers the JSON error (proxy/fastexchange.py: ``FastExchange._fall_back``)
BEFORE_HEAD = 1
FAST = {"timeouts": {"read": "300ms", "total": "2s", "connect": "1s"}}

Handler = Any


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _json_error(out: bytes, status: int) -> None:
    (r,) = parse_responses(out)
    assert r.complete and r.status == status, out
    assert r.header(b"content-type") == b"application/json"
    assert orjson.loads(r.body)["status"] == status


async def _gw_exchange(
    handler: Handler,
    path: ServingPath,
    data: bytes = GET_CLOSE,
    until: Callable[[bytes], bool] | None = None,
    fallback: int = 0,
    **up: Any,
) -> tuple[bytes, bool]:
    """``data`` on one client connection through a gateway to an upstream scripted by
    ``handler`` (per connection, after any warm-up requests): on ``path``, where a warm
    exchange that fails before the response head is handed back to the task (``fallback``)."""
    async with (
        scripted_upstream(warmable(handler)) as (url, _),
        run_gateway(path.config(cfg_for(url, **up))) as gw,
    ):
        await path.prepare(gw)
        out = await exchange(gw.port, data, timeout=4, until=until)
        path.assert_served(1, fallback=fallback)
        return out


# --- before the response head: a JSON error ------------------------------------------------


async def test_upstream_closes_before_responding_is_502(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)

    out, _ = await _gw_exchange(handler, path, fallback=BEFORE_HEAD)
    _json_error(out, 502)


async def test_upstream_reset_before_responding_is_502(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        _rst(w)

    out, _ = await _gw_exchange(handler, path, fallback=BEFORE_HEAD)
    _json_error(out, 502)


async def test_upstream_stalls_before_head_is_504_after_read_timeout(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        await asyncio.sleep(10)

    t0 = time.monotonic()
    out, _ = await _gw_exchange(handler, path, fallback=BEFORE_HEAD, **FAST)
    elapsed = time.monotonic() - t0
    _json_error(out, 504)
    assert 0.25 < elapsed < 2.5, elapsed


async def test_upstream_stalls_mid_head_is_504(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await asyncio.sleep(10)

    out, _ = await _gw_exchange(handler, path, fallback=BEFORE_HEAD, **FAST)
    _json_error(out, 504)


INVALID_HEADS = {
    "garbage": b"garbage\r\n\r\n",
    "no_reason_digits": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "no_status": b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n",
    "http2_version": b"HTTP/2 200\r\nContent-Length: 0\r\n\r\n",
    "bare_lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "dup_content_length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    "negative_content_length": b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
    "cl_and_te": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
    "te_gzip_chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    b"2\r\nok\r\n0\r\n\r\n",
    "te_gzip_only": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok",
    "header_nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "obs_fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "space_before_colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
}


@pytest.mark.parametrize("name", sorted(INVALID_HEADS))
async def test_invalid_response_head_is_502(name: str, path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(INVALID_HEADS[name])
        await w.drain()
        await asyncio.sleep(1)

    out, _ = await _gw_exchange(handler, path, fallback=BEFORE_HEAD, **FAST)
    _json_error(out, 502)


# --- after the response head: the client connection is aborted, never "completed" ----------


async def test_upstream_closes_mid_body_content_length(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 100)
        await w.drain()

    out, closed = await _gw_exchange(handler, path, data=GET)
    (r,) = parse_responses(out)
    assert r.status == 200 and not r.complete
    assert r.header(b"content-length") == b"1000"
    assert len(r.body) == 100
    assert closed


async def test_upstream_closes_mid_chunked_body_no_terminator(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"a\r\nhal")
        await w.drain()

    out, closed = await _gw_exchange(handler, path, data=GET)
    (r,) = parse_responses(out)
    assert r.status == 200 and r.chunked
    assert not r.complete, "the chunked terminator must not be sent for a truncated body"
    assert not out.endswith(b"0\r\n\r\n")
    assert r.body.startswith(b"hello")
    assert closed


async def test_upstream_reset_mid_body(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await w.drain()
        await asyncio.sleep(0.05)
        _rst(w)

    out, closed = await _gw_exchange(handler, path, data=GET)
    (r,) = parse_responses(out)
    assert r.status == 200 and not r.complete
    assert closed


async def test_upstream_close_delimited_body_is_complete_at_eof(path: ServingPath) -> None:
    """A response without framing ends at close (RFC 9112 §6.3): relayed chunked, with its
    terminator, since that close is the normal end."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close")
        await w.drain()

    # the client connection stays open (keep-alive): read up to the last chunk, not the timeout
    out, _ = await _gw_exchange(handler, path, data=GET, until=lambda o: o.endswith(b"0\r\n\r\n"))
    (r,) = parse_responses(out)
    assert r.complete and r.body == b"until close"


async def test_upstream_stalls_mid_body_client_aborted_after_read_timeout(
    path: ServingPath,
) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
        await w.drain()
        await asyncio.sleep(10)

    t0 = time.monotonic()
    out, closed = await _gw_exchange(handler, path, data=GET, **FAST)
    elapsed = time.monotonic() - t0
    (r,) = parse_responses(out)
    assert r.status == 200 and not r.complete
    assert closed
    assert 0.25 < elapsed < 3, elapsed


async def test_slow_but_steady_body_is_not_cut_by_read_timeout(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
        for _ in range(8):
            await asyncio.sleep(0.15)  # total 1.2 s > read timeout, each gap < 0.3 s
            w.write(b"x")
            await w.drain()

    out, _ = await _gw_exchange(handler, path, **FAST)
    (r,) = parse_responses(out)
    assert r.complete and r.body == b"x" * 8


# --- pooled connection hygiene ---------------------------------------------------------------


async def test_shorter_content_length_extra_bytes_never_become_next_response() -> None:
    """The upstream claims 5 bytes but sends a whole second response after them: the extra
    bytes must not answer the client's next request; the connection is discarded."""
    served = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request_head(r)
            served.append(head.split(b" ")[1])
            if head.startswith(b"GET /first"):
                w.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
                    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"
                )
            else:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")
            await w.drain()

    async with scripted_upstream(handler) as (url, accepted), run_gateway(cfg_for(url)) as gw:
        out, _ = await exchange(
            gw.port,
            b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n"
            b"Connection: close\r\n\r\n",
        )
        resps = parse_responses(out)
        assert [r.body for r in resps] == [b"hello", b"real"], out
        assert b"SMUGGLED" not in out
        assert served == [b"/first", b"/second"]
        assert len(accepted) == 2


async def test_late_extra_bytes_on_idle_connection_discard_it() -> None:
    discarded = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request_head(r)
            if head.startswith(b"GET /first"):
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                await w.drain()
                # half a response, sent once the connection sits idle in the pool (the client
                # has its answer); the gateway must close this connection, not reuse it
                await first_answered.wait()
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nSMUG")
                await w.drain()
                assert await r.read() == b""
                discarded.set()
                return
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")
            await w.drain()

    first_answered = asyncio.Event()
    async with scripted_upstream(handler) as (url, accepted), run_gateway(cfg_for(url)) as gw:
        out, _ = await exchange(
            gw.port, b"GET /first HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        assert parse_responses(out)[0].body == b"hello"
        first_answered.set()
        await asyncio.wait_for(discarded.wait(), 5)
        out, _ = await exchange(
            gw.port, b"GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        (r,) = parse_responses(out)
        assert r.status == 200 and r.body == b"real", out
        assert len(accepted) == 2


async def test_longer_content_length_then_close_aborts_client(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        await w.drain()

    out, closed = await _gw_exchange(handler, path, data=GET)
    (r,) = parse_responses(out)
    assert not r.complete and r.body == b"short"
    assert closed


async def test_informational_responses_then_final(path: ServingPath) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 102 Processing\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        )
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
        await w.drain()

    out, _ = await _gw_exchange(handler, path)
    resps = parse_responses(out)
    # 100/102 are hop-by-hop interim answers to this connection; 103 carries end-to-end hints
    assert [r.status for r in resps] == [103, 201], out
    assert resps[0].header(b"link") == b"</a.css>; rel=preload"
    assert resps[1].complete and resps[1].body == b"done"


async def test_head_response_with_length_headers_does_not_wait_for_body() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request_head(r)
            if head.startswith(b"HEAD /cl"):
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            elif head.startswith(b"HEAD /te"):
                w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            else:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody")
            await w.drain()

    async with (
        scripted_upstream(handler) as (url, accepted),
        run_gateway(cfg_for(url, **FAST)) as gw,
    ):
        t0 = time.monotonic()
        out, _ = await exchange(
            gw.port,
            b"HEAD /cl HTTP/1.1\r\nHost: a\r\n\r\nHEAD /te HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        assert time.monotonic() - t0 < 1.0
        resps = parse_responses(out, head_only=(0, 1))
        assert [r.status for r in resps] == [200, 200, 200], out
        assert resps[0].header(b"content-length") == b"1000"
        assert resps[2].body == b"body"
        assert len(accepted) == 1  # the connection stayed in sync and was reused


async def test_upstream_connection_close_is_not_reused() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await w.drain()
        await asyncio.sleep(2)  # keeps the socket open: only the header says "close"

    async with scripted_upstream(handler) as (url, accepted), run_gateway(cfg_for(url)) as gw:
        for _ in range(3):
            out, _ = await exchange(gw.port, GET_CLOSE)
            (r,) = parse_responses(out)
            assert r.complete and r.body == b"ok"
            assert r.header(b"connection") == b"close"  # our own, for the client's request
        assert len(accepted) == 3


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_upstream_closing_idle_connections_fresh_connection_used(method: str) -> None:
    """The upstream closes every connection right after answering (no Connection: close):
    each following request must succeed on a fresh connection. (The upstream ends its side
    and waits for the gateway's close, so the next request is sent once the gateway has seen
    the end: the race of a request crossing the close is the stale-connection drill's.)"""
    seen_closed: asyncio.Queue[int] = asyncio.Queue()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await read_request_head(r)
        if b"content-length: 4" in head.lower():
            await r.readexactly(4)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        w.write_eof()
        assert await r.read() == b""  # the gateway closed its end: it saw ours
        seen_closed.put_nowait(1)

    async with scripted_upstream(handler) as (url, accepted), run_gateway(cfg_for(url)) as gw:
        body = b"Content-Length: 4\r\n\r\nbody" if method == "POST" else b"\r\n"
        req = method.encode() + b" /x HTTP/1.1\r\nHost: a\r\n" + body
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        for i in range(5):
            writer.write(req)
            await writer.drain()
            async with asyncio.timeout(3):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), (i, head)
                assert await reader.readexactly(2) == b"ok"
            await asyncio.wait_for(seen_closed.get(), 5)
        writer.close()
        assert len(accepted) == 5


@pytest.mark.parametrize("task_free", [False, True], ids=["general", "task_free"])
async def test_stale_connection_race_get_is_retried_on_fresh_connection(task_free: bool) -> None:
    """The upstream's idle timer fires just as a reused connection carries the next request:
    it closes without answering. Nothing came back, the method is idempotent: retry once on a
    fresh connection rather than fail the client. A stale connection is found only on a warm
    pool, so the general path is chosen here by turning the task-free one off."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        await read_request_head(r)  # the reused connection's request: dropped unanswered

    async with scripted_upstream(handler) as (url, accepted), run_gateway(cfg_for(url)) as gw:
        app = gw.worker.app
        assert app is not None
        app.fast = task_free
        out, _ = await exchange(gw.port, GET_CLOSE)  # fills the pool
        assert parse_responses(out)[0].body == b"ok"
        counts = ServingPath("warm" if task_free else "cold")
        await counts.prepare(gw, request=b"")
        for _ in range(3):
            out, _ = await exchange(gw.port, GET_CLOSE)
            (r,) = parse_responses(out)
            assert r.status == 200 and r.body == b"ok", out
        # every request met a stale connection and was retried once, on a new one
        assert len(accepted) == 4
        # task-free, each stale connection hands the request back to the task for the retry
        counts.assert_served(3, fallback=3)

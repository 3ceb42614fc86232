"""HTTP/2 abuse and failure handling, driven with the ``h2`` library and raw frames.

Outcomes are asserted on the protocol (which frames and error codes came back, how many
requests reached the upstream), never on timings.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from portway.http.h2guard import MAX_CONTINUATIONS, PREMATURE_RESETS
from portway.http.models import Request, Response
from portway.server.worker import Worker
from tests.helpers import _config, free_port, raw_request, run_gateway, run_upstream, simple_config
from tests.http.test_h2 import H2Client

#: every test runs on both HTTP/2 server engines (tests/http/conftest.py)
pytestmark = pytest.mark.usefixtures("h2_engine")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM = 11
PROTOCOL_ERROR = 1


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """(type, stream id, payload) of every complete frame in ``data``."""
    out = []
    i = 0
    while i + 9 <= len(data):
        n = int.from_bytes(data[i : i + 3], "big")
        sid = int.from_bytes(data[i + 5 : i + 9], "big") & 0x7FFFFFFF
        out.append((data[i + 3], sid, data[i + 9 : i + 9 + n]))
        i += 9 + n
    return out


def _goaway_code(data: bytes) -> int | None:
    for t, _, payload in _frames(data):
        if t == 0x7:
            return int.from_bytes(payload[4:8], "big")
    return None


async def _exchange(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send ``payload`` after the preface and read until the server closes."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(PREFACE + SettingsFrame(0).serialize() + payload)
    out = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await r.read(65536):
                out += chunk
    except (ConnectionError, TimeoutError):
        pass
    finally:
        w.close()
    return out


def _request_block(enc: Any, path: str) -> bytes:
    return bytes(
        enc.encode([(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "t")])
    )


class _Stalled:
    """An upstream handler that holds every request until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen = asyncio.Event()
        self.count = 0

    async def __call__(self, req: Request) -> Response:
        self.count += 1
        self.seen.set()
        if req.path.startswith("/slow"):
            await self.release.wait()
        return Response.json(200, {"path": req.path})


async def test_rapid_reset_flood_is_cut_off() -> None:
    import hpack

    stalled = _Stalled()
    async with run_upstream(stalled) as up, run_gateway(simple_config(up.url)) as gw:
        enc = hpack.Encoder()
        flood = bytearray()
        pairs = 1000
        for i in range(pairs):
            sid = 1 + 2 * i
            h = HeadersFrame(sid, _request_block(enc, "/slow"), flags=["END_HEADERS", "END_STREAM"])
            rst = RstStreamFrame(sid, error_code=8)  # CANCEL
            flood += h.serialize() + rst.serialize()
        out = await _exchange(gw.port, bytes(flood))
        assert _goaway_code(out) == ENHANCE_YOUR_CALM
        goaway = next(p for t, _, p in _frames(out) if t == 0x7)
        last = int.from_bytes(goaway[:4], "big") & 0x7FFFFFFF
        assert last < 2 * pairs - 1  # cut off before the end of the flood
        # the work done is bounded by the budget, not by the flood
        assert stalled.count <= PREMATURE_RESETS + 2
        stalled.release.set()


async def test_continuation_floods_are_cut_off() -> None:
    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        # many small CONTINUATION frames (valid HPACK: an engine that decodes as frames
        # arrive, like nghttp2, must hit the flood limit, not a decoding error)
        flood = HeadersFrame(1, b"\x82", flags=[]).serialize()
        flood += b"".join(ContinuationFrame(1, b"\x82" * 64).serialize() for _ in range(1000))
        out = await _exchange(gw.port, flood)
        assert _goaway_code(out) == ENHANCE_YOUR_CALM
        # a few large ones: the header block's bytes are bounded too
        flood = HeadersFrame(1, b"\x82", flags=[]).serialize()
        n = MAX_CONTINUATIONS - 2
        flood += b"".join(ContinuationFrame(1, b"\x82" * 16000).serialize() for _ in range(n))
        out = await _exchange(gw.port, flood)
        assert _goaway_code(out) == ENHANCE_YOUR_CALM
        status = (await raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 3, False))[:12]
        assert status == b"HTTP/1.1 200"


async def test_ping_and_settings_floods_are_cut_off() -> None:
    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        for frame in (PingFrame(0, b"12345678"), SettingsFrame(0)):
            out = await _exchange(gw.port, frame.serialize() * 2000)
            assert _goaway_code(out) == ENHANCE_YOUR_CALM
            acks = sum(1 for t, _, _ in _frames(out) if t in (0x4, 0x6))
            assert acks < 500  # answers stopped well before the flood's end


async def test_pings_between_responses_are_not_a_flood() -> None:
    # gRPC clients send a PING per round trip while data flows (BDP estimation): far more
    # than the bucket's burst over a busy connection, each after response traffic
    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        c = await H2Client.open(gw.port)
        try:
            rounds, per_round = 30, 20
            for _ in range(rounds):
                sid = c.request("GET", "/")
                for _ in range(per_round):
                    c.conn.ping(b"12345678")
                await c.flush()
                await c.wait(sid)
                assert c.responses[sid]["status"] == 200 and not c.closed
            while sum(isinstance(e, h2.events.PingAckReceived) for e in c.events) < (
                rounds * per_round
            ):
                await c.pump_once()
                assert not c.closed
            assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in c.events)
        finally:
            c.writer.close()


async def test_stream_errors_leave_the_connection_and_other_streams_working() -> None:
    stalled = _Stalled()
    async with run_upstream(stalled) as up, run_gateway(simple_config(up.url)) as gw:
        c = await H2Client.open(gw.port)
        c.conn.config.validate_outbound_headers = False
        c.conn.config.normalize_outbound_headers = False
        try:
            slow = c.request("GET", "/slow")
            await c.flush()
            await stalled.seen.wait()
            # a response pseudo-header in a request: malformed (RFC 9113 §8.3)
            bad = c.conn.get_next_available_stream_id()
            c.conn.send_headers(
                bad,
                [(b":method", b"GET"), (b":path", b"/x"), (b":scheme", b"http"),
                 (b":authority", b"t"), (b":status", b"200")],
                end_stream=True,
            )  # fmt: skip
            c.responses[bad] = {"status": None, "body": bytearray(), "done": False, "reset": None}
            # a body shorter than its Content-Length
            short = c.conn.get_next_available_stream_id()
            c.conn.send_headers(
                short,
                [(b":method", b"POST"), (b":path", b"/y"), (b":scheme", b"http"),
                 (b":authority", b"t"), (b"content-length", b"10")],
            )  # fmt: skip
            c.conn.send_data(short, b"abc", end_stream=True)
            c.responses[short] = {"status": None, "body": bytearray(), "done": False, "reset": None}
            await c.flush()
            await c.wait(bad, short)
            assert c.responses[bad]["reset"] == PROTOCOL_ERROR
            assert c.responses[short]["reset"] == PROTOCOL_ERROR
            ok = c.request("GET", "/after")
            await c.flush()
            await c.wait(ok)
            assert c.responses[ok]["status"] == 200
            stalled.release.set()
            await c.wait(slow)
            assert c.responses[slow]["status"] == 200
            assert not c.closed
            assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in c.events)
        finally:
            c.close()


async def test_goaway_on_shutdown_completes_streams_in_flight() -> None:
    stalled = _Stalled()
    async with run_upstream(stalled) as up:
        port = free_port()
        worker = Worker(_config(simple_config(up.url), port))
        await worker.start()
        c = await H2Client.open(port)
        try:
            slow = c.request("GET", "/slow/1")
            await c.flush()
            await stalled.seen.wait()
            stopping = asyncio.get_running_loop().create_task(worker.shutdown())
            # read raw frames: the h2 library as a client refuses frames after a GOAWAY
            # (its connection state machine closes), though RFC 9113 §6.8 lets them come
            data = b""
            while _goaway_code(data) is None:
                chunk = await asyncio.wait_for(c.reader.read(65536), 10)
                assert chunk
                data += chunk
            goaway = next(p for t, _, p in _frames(data) if t == 0x7)
            assert int.from_bytes(goaway[:4], "big") == slow  # the last stream served
            assert _goaway_code(data) == 0  # NO_ERROR: a graceful stop
            stalled.release.set()
            # the stream in flight still completes, then the server closes the connection
            while chunk := await asyncio.wait_for(c.reader.read(65536), 10):
                data += chunk
            frames = [(t, sid) for t, sid, _ in _frames(data)]
            assert (0x1, slow) in frames and (0x0, slow) in frames  # HEADERS and DATA
            assert (0x3, slow) not in frames  # never reset
            heads = [p for t, sid, p in _frames(data) if t == 0x1 and sid == slow]
            assert dict(c.conn.decoder.decode(heads[0], raw=True))[b":status"] == b"200"
            await asyncio.wait_for(stopping, 30)
        finally:
            c.close()


async def test_broken_preface_on_a_shared_port_gets_goaway() -> None:
    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        out = await raw_request(gw.port, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", timeout=5)
        assert _goaway_code(out) == PROTOCOL_ERROR
        assert not out.startswith(b"HTTP/1.1")

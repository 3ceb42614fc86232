"""A real HTTP/3 client for tests: aioquic's QUIC + H3 (as aioquic's examples/http3_client.py).

async with h3_client(port, pki.ca_path, "a.example.com") as c:
    r = await c.request("GET", "/x", authority="a.example.com")
    r.status, r.headers, r.body, r.reset   # reset: the server's stream error code
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer, BufferReadError
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived, StreamReset


@dataclass
class H3Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: the stream error code when the server reset the stream
    reset: int | None = None

    def header(self, name: str) -> str | None:
        n = name.encode()
        return next((v.decode() for k, v in self.headers if k == n), None)


class H3Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self._responses: dict[int, H3Response] = {}
        self._done: dict[int, asyncio.Future[H3Response]] = {}
        #: set when the connection ends: the error code of the CONNECTION_CLOSE
        self.terminated: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        #: set when the server's GOAWAY arrives: the stream id it carries
        self.goaway: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._control: dict[int, bytes] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            if not self.terminated.done():
                self.terminated.set_result(event.error_code)
            for sid, f in self._done.items():
                if not f.done():
                    f.set_exception(ConnectionError(f"connection closed on stream {sid}"))
            return
        if isinstance(event, StreamDataReceived) and event.stream_id % 4 == 3:
            self._server_uni(event.stream_id, event.data)
        if isinstance(event, StreamReset) and event.stream_id in self._done:
            r = self._responses[event.stream_id]
            r.reset = event.error_code
            self._finish(event.stream_id)
        for ev in self.h3.handle_event(event):
            r = self._responses.get(ev.stream_id) if hasattr(ev, "stream_id") else None
            if r is None:
                continue
            if isinstance(ev, HeadersReceived):
                if r.status and int(dict(ev.headers).get(b":status", b"0")) == 0:
                    r.trailers = list(ev.headers)
                else:
                    st = int(dict(ev.headers)[b":status"])
                    if st >= 200:
                        r.status = st
                        r.headers = [(k, v) for k, v in ev.headers if not k.startswith(b":")]
            elif isinstance(ev, DataReceived):
                r.body += ev.data
            if getattr(ev, "stream_ended", False):
                self._finish(ev.stream_id)

    def _server_uni(self, sid: int, data: bytes) -> None:
        """Frames of the server's control stream (type 0x00), read for GOAWAY (0x07), which
        aioquic's H3Connection accepts without telling."""
        buf = self._control.get(sid, b"") + data
        self._control[sid] = buf
        b = Buffer(data=buf)
        try:
            if b.pull_uint_var() != 0x00:
                return
            while not b.eof():
                ftype, length = b.pull_uint_var(), b.pull_uint_var()
                payload = b.pull_bytes(length)
                if ftype == 0x07 and not self.goaway.done():
                    self.goaway.set_result(Buffer(data=payload).pull_uint_var())
        except BufferReadError:
            return  # a frame still incomplete: the rest comes with the next data

    def _finish(self, sid: int) -> None:
        f = self._done.get(sid)
        if f is not None and not f.done():
            f.set_result(self._responses[sid])

    def start(
        self,
        method: str,
        path: str,
        authority: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
    ) -> asyncio.Future[H3Response]:
        """Send a request; the future resolves with its complete response."""
        sid = self._quic.get_next_available_stream_id()
        self._responses[sid] = H3Response()
        fut: asyncio.Future[H3Response] = asyncio.get_running_loop().create_future()
        self._done[sid] = fut
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ] + [(k.lower().encode(), v.encode()) for k, v in headers or []]
        self.h3.send_headers(sid, fields, end_stream=body is None)
        if body is not None:
            self.h3.send_data(sid, body, end_stream=True)
        self.transmit()
        return fut

    async def request(
        self,
        method: str,
        path: str,
        authority: str = "a.example.com",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        timeout: float = 20.0,
    ) -> H3Response:
        return await asyncio.wait_for(self.start(method, path, authority, headers, body), timeout)


@asynccontextmanager
async def h3_client(
    port: int, ca_path: str, server_name: str = "a.example.com"
) -> AsyncIterator[H3Client]:
    conf = QuicConfiguration(is_client=True, alpn_protocols=list(H3_ALPN))
    conf.server_name = server_name
    conf.load_verify_locations(ca_path)
    async with asyncio.timeout(20):
        cm = connect("127.0.0.1", port, configuration=conf, create_protocol=H3Client)
        client = await cm.__aenter__()
    try:
        yield client  # type: ignore[misc]
    finally:
        await cm.__aexit__(None, None, None)

#!/usr/bin/env python3
"""Reference floor: the smallest correct-enough callback proxy on uvloop + httptools.

Not Portway. This is the shape DESIGN.md §2 measured (server protocol and client protocol,
both llhttp, a keep-alive pool, no tasks or futures on the request path). It answers "what
can Python do here at all" so Portway's numbers can be read against it:

    python bench/proto_proxy.py LISTEN_PORT UPSTREAM_PORT [--batch]

``--batch`` sends the writes of one loop pass back to back, as Portway does.
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop

_pending: list[tuple[asyncio.Transport, bytes]] = []


def _flush() -> None:
    global _pending
    batch, _pending = _pending, []
    for t, d in batch:
        if not t.is_closing():
            t.write(d)


def _send_batched(t: asyncio.Transport, data: bytes) -> None:
    # the writes of one loop pass leave back to back (see portway/http/flow.py)
    if not _pending:
        asyncio.get_running_loop().call_soon(_flush)
    _pending.append((t, data))


def _send_now(t: asyncio.Transport, data: bytes) -> None:
    if not t.is_closing():
        t.write(data)


send = _send_now


class Up(asyncio.Protocol):
    def __init__(self, pool: list[Up]) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.client: Server | None = None
        self.transport: asyncio.Transport | None = None
        self.headers: list[bytes] = []
        self.out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        # One write per read: head and body of a small response leave in one send().
        client = self.client
        self.parser.feed_data(data)
        if self.out:
            assert client is not None
            send(client.transport, b"".join(self.out))
            self.out.clear()
            if self.client is None:
                client.done()

    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in (b"connection", b"keep-alive"):
            self.headers.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        code = self.parser.get_status_code()
        self.out.append(b"HTTP/1.1 %d OK\r\n" % code + b"".join(self.headers) + b"\r\n")

    def on_body(self, body: bytes) -> None:
        self.out.append(body)

    def on_message_complete(self) -> None:
        self.client = None
        if self.parser.should_keep_alive():
            self.pool.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        if self.client is not None:
            self.client.transport.close()


class Server(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, pool: list[Up]) -> None:
        self.loop = loop
        self.port = port
        self.pool = pool
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.url = b""
        self.headers: list[bytes] = []
        self.queue: list[bytes] = []
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in (b"connection", b"keep-alive"):
            self.headers.append(name + b": " + value + b"\r\n")

    def on_message_complete(self) -> None:
        req = (
            self.parser.get_method()
            + b" "
            + self.url
            + b" HTTP/1.1\r\n"
            + b"".join(self.headers)
            + b"\r\n"
        )
        if self.busy:
            self.queue.append(req)
        else:
            self.send(req)

    def send(self, req: bytes) -> None:
        self.busy = True
        if self.pool:
            up = self.pool.pop()
            up.client = self
            assert up.transport is not None
            send(up.transport, req)
        else:
            self.loop.create_task(self.connect(req))

    async def connect(self, req: bytes) -> None:
        _, up = await self.loop.create_connection(lambda: Up(self.pool), "127.0.0.1", self.port)
        up.client = self
        assert up.transport is not None
        up.transport.write(req)

    def done(self) -> None:
        self.busy = False
        if self.queue:
            self.send(self.queue.pop(0))


def main() -> None:
    global send
    listen, upstream = int(sys.argv[1]), int(sys.argv[2])
    if sys.argv[3:] == ["--batch"]:
        send = _send_batched
    uvloop.install()
    loop = asyncio.new_event_loop()
    pool: list[Up] = []
    srv = loop.run_until_complete(
        loop.create_server(lambda: Server(loop, upstream, pool), "127.0.0.1", listen, backlog=4096)
    )
    try:
        loop.run_forever()
    finally:
        srv.close()


if __name__ == "__main__":
    main()

"""Helpers for the adversarial data-plane tests: a byte-recording raw upstream and a strict
HTTP/1.1 response parser for what the gateway sends back to clients.

``RawUpstream`` sees the exact bytes the gateway writes, so the tests can assert that there is
exactly one interpretation of each forwarded message (no desync between us and the upstream).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import httptools

from tests.helpers import free_port


@dataclass
class Message:
    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    complete: bool = False
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class _RequestSink:
    """llhttp callbacks collecting the requests of one upstream connection."""

    def __init__(self, on_complete: Callable[[Message], None]) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.messages: list[Message] = []
        self._on_complete = on_complete
        self._url = b""
        self._cur: Message | None = None
        self._in_head = False

    def on_message_begin(self) -> None:
        self._url = b""
        self._in_head = True
        self._cur = Message("", b"", [])

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._cur is not None
        if self._in_head:
            self._cur.headers.append((name.lower(), value))
        else:
            self._cur.trailers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self._cur is not None
        self._in_head = False
        self._cur.method = self.parser.get_method().decode()
        self._cur.target = self._url
        self.messages.append(self._cur)

    def on_body(self, body: bytes) -> None:
        assert self._cur is not None
        self._cur.body += body

    def on_message_complete(self) -> None:
        assert self._cur is not None
        self._cur.complete = True
        self._on_complete(self._cur)


Responder = Callable[[Message, asyncio.StreamWriter], Awaitable[None]]


async def ok_responder(msg: Message, writer: asyncio.StreamWriter) -> None:
    body = b"ok:" + msg.target + b":%d" % len(msg.body)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


@dataclass
class RawUpstream:
    url: str
    port: int
    #: every byte received, one entry per accepted connection
    raw: list[bytearray] = field(default_factory=list)
    #: every request head parsed (complete or not), in arrival order across connections
    messages: list[Message] = field(default_factory=list)
    #: llhttp errors (the gateway sent something that is not HTTP/1.1)
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> list[Message]:
        return [m for m in self.messages if m.complete]


@asynccontextmanager
async def raw_upstream(respond: Responder = ok_responder) -> AsyncIterator[RawUpstream]:
    """An upstream that parses what it receives with llhttp and records it byte for byte;
    ``respond`` is awaited once per complete request."""
    port = free_port()
    up = RawUpstream(f"http://127.0.0.1:{port}", port)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = bytearray()
        up.raw.append(buf)
        done: asyncio.Queue[Message] = asyncio.Queue()
        sink = _RequestSink(done.put_nowait)
        upgraded = False
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                buf += data
                if upgraded:
                    continue  # tunnel bytes: recorded raw, not parsed
                before = len(sink.messages)
                try:
                    sink.parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    upgraded = True
                except httptools.HttpParserError as e:
                    up.errors.append(str(e))
                    break
                finally:
                    up.messages.extend(sink.messages[before:])
                while not done.empty():
                    await respond(done.get_nowait(), writer)
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def spawn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        t = asyncio.get_running_loop().create_task(handle(r, w))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    server = await asyncio.start_server(spawn, "127.0.0.1", port)
    try:
        yield up
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        with suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def scripted_upstream(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[tuple[str, list[int]]]:
    """A raw upstream running ``handler`` per connection; yields ``(url, accepted)`` where
    ``accepted`` grows by one per connection accepted."""
    port = free_port()
    accepted: list[int] = []
    tasks: set[asyncio.Task[None]] = set()

    async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await handler(r, w)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    def spawn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(len(accepted))
        t = asyncio.get_running_loop().create_task(run(r, w))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    server = await asyncio.start_server(spawn, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}", accepted
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        with suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


@dataclass
class ParsedResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    complete: bool = False
    chunked: bool = False
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class _ResponseSink:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.responses: list[ParsedResponse] = []
        self._in_head = False

    def on_message_begin(self) -> None:
        self._in_head = True
        self.responses.append(ParsedResponse(0, []))

    def on_header(self, name: bytes, value: bytes) -> None:
        r = self.responses[-1]
        (r.headers if self._in_head else r.trailers).append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        r = self.responses[-1]
        r.status = self.parser.get_status_code()
        r.chunked = (r.header(b"transfer-encoding") or b"").lower() == b"chunked"

    def on_body(self, body: bytes) -> None:
        self.responses[-1].body += body

    def on_message_complete(self) -> None:
        self.responses[-1].complete = True


class MalformedResponseError(AssertionError):
    pass


def parse_responses(data: bytes, head_only: tuple[int, ...] = ()) -> list[ParsedResponse]:
    """Parse everything a client received. Raises :class:`MalformedResponseError` if the bytes
    are not a sequence of well-formed HTTP/1.1 responses (the last one may be incomplete:
    callers check ``complete``). ``head_only`` lists indices of responses to HEAD requests."""
    sink = _ResponseSink()
    if not head_only:
        try:
            sink.parser.feed_data(data)
        except httptools.HttpParserError as e:
            raise MalformedResponseError(f"{e}: {data[:300]!r}") from e
        return sink.responses
    # responses to HEAD carry framing headers but no body: split them off by hand
    out: list[ParsedResponse] = []
    rest = data
    i = 0
    while rest:
        if i in head_only:
            head, sep, rest = rest.partition(b"\r\n\r\n")
            if not sep:
                raise MalformedResponseError(f"incomplete head: {head[:200]!r}")
            out.append(_parse_head_only(head))
        else:
            sink = _ResponseSink()
            try:
                sink.parser.feed_data(rest)
            except httptools.HttpParserUpgrade:
                pass
            except httptools.HttpParserError as e:
                raise MalformedResponseError(f"{e}: {rest[:300]!r}") from e
            out.extend(sink.responses)
            break
        i += 1
    return out


def _parse_head_only(head: bytes) -> ParsedResponse:
    line, *fields = head.split(b"\r\n")
    version, status, *_ = line.split(b" ", 2)
    if version != b"HTTP/1.1" or len(status) != 3 or not status.isdigit():
        raise MalformedResponseError(f"bad status line {line!r}")
    headers = []
    for f in fields:
        name, sep, value = f.partition(b":")
        if not sep or not name or name != name.strip():
            raise MalformedResponseError(f"bad header line {f!r}")
        headers.append((name.lower(), value.strip()))
    return ParsedResponse(int(status), headers, complete=True)


async def exchange(
    port: int,
    data: bytes,
    *,
    timeout: float = 3.0,
    half_close: bool = False,
    until: Callable[[bytes], bool] | None = None,
) -> tuple[bytes, bool]:
    """Send ``data`` on a fresh connection; return ``(received, closed_by_server)``. Reads
    until the server closes, ``until(received)`` holds, or ``timeout``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = b""
    closed = False
    try:
        writer.write(data)
        await writer.drain()
        if half_close:
            writer.write_eof()
        async with asyncio.timeout(timeout):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    closed = True
                    break
                out += chunk
                if until is not None and until(out):
                    break
    except TimeoutError:
        pass
    except ConnectionError:
        closed = True
    finally:
        writer.close()
        with suppress(Exception):
            await writer.wait_closed()
    return out, closed


def cfg_for(url: str, **upstream: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"name": "r", "match": {"paths": ["/"]}, "upstream": "u"}
    u: dict[str, Any] = {"targets": [{"url": url}]}
    u.update(upstream)
    return {"upstreams": {"u": u}, "routes": [r]}

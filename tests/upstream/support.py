"""Test support for upstream tests: request contexts, a tiny HTTP server, a tiny DNS server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from portway.http.headers import Headers
from portway.http.models import Request
from portway.pipeline.context import Consumer, RequestContext
from tests.helpers import free_port as free_port

CtxFactory = Callable[..., RequestContext]


def make_ctx(
    method: str = "GET",
    path: str = "/",
    client_ip: str = "10.0.0.1",
    headers: list[tuple[str, str]] | None = None,
    consumer: str | None = None,
) -> RequestContext:
    req = Request(
        method=method,
        path=path,
        query=b"",
        headers=Headers.from_pairs(headers or []),
        client_ip=client_ip,
    )
    ctx = RequestContext(req, "rid")
    if consumer is not None:
        ctx.consumer = Consumer(id=consumer, username=consumer)
    return ctx


class HttpServer:
    """A minimal HTTP/1.1 keep-alive server on 127.0.0.1.

    Every request is answered with ``status`` after ``delay`` seconds; with ``reset`` set it
    reads the request and closes the connection without answering. ``stop()`` closes the
    listener and every open connection (a crashed backend); ``start()`` brings it back on the
    same port.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.status = 200
        self.delay = 0.0
        self.reset = False
        self.hits = 0
        self.methods: list[str] = []
        self.paths: list[str] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self._writers.add(w)
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                if length:
                    await r.readexactly(length)
                self.hits += 1
                self.methods.append(head.split(b" ", 1)[0].decode())
                self.paths.append(head.split(b" ", 2)[1].decode())
                if self.reset:
                    break
                if self.delay:
                    await asyncio.sleep(self.delay)
                body = b"ok"
                w.write(
                    f"HTTP/1.1 {self.status} X\r\ncontent-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(w)
            w.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        await asyncio.sleep(0)


@dataclass
class DnsServer:
    """A UDP DNS server answering from ``records``: name → list of (type, text, ttl)."""

    records: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    port: int = 0
    fail: bool = False
    queries: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(self, data: bytes) -> bytes:
        q = dns.message.from_wire(data)
        resp = dns.message.make_response(q)
        self.queries += 1
        if self.fail:
            resp.set_rcode(dns.rcode.SERVFAIL)
            return resp.to_wire()
        question = q.question[0]
        name = question.name.to_text()
        want = dns.rdatatype.to_text(question.rdtype)
        recs = self.records.get(name)
        if recs is None:
            resp.set_rcode(dns.rcode.NXDOMAIN)
            return resp.to_wire()
        texts = [text for rtype, text in recs if rtype == want]
        if texts:
            resp.answer.append(dns.rrset.from_text_list(name, 5, "IN", want, texts))
        return resp.to_wire()


class _DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.server.answer(data), addr)

"""A minimal HTTP/1.1 keep-alive client for counting many responses quickly (tests only)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import orjson

from portway.http.headers import Headers
from portway.http.models import Request, Response


def named(name: str) -> Callable[[Request], Awaitable[Response]]:
    """An upstream handler answering 200 with ``X-Backend: name``."""

    async def h(req: Request) -> Response:
        return Response(200, Headers([(b"x-backend", name.encode())]), orjson.dumps({"b": name}))

    return h


class KeepAlive:
    """One connection; ``get`` sends a request and reads one Content-Length response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> KeepAlive:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", "Host: test"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *fields = head.decode("latin-1").split("\r\n")
        h: dict[str, str] = {}
        for f in fields:
            if ": " in f:
                k, v = f.split(": ", 1)
                k = k.lower()
                h[k] = h[k] + ", " + v if k in h else v
        n = int(h.get("content-length", "0"))
        data = await self.reader.readexactly(n) if n else b""
        return int(status_line.split(" ")[1]), h, data

    async def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        return await self.request("GET", path, headers)

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

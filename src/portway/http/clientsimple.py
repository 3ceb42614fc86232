"""Opening an upstream connection, and one request on a fresh one (:func:`simple_request`:
health probes, JWKS, introspection, exporters). Re-exported by ``portway.http.client``; not
on the request path (not compiled)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from portway.http.clientwire import build_request_head
from portway.http.flow import as_protocol
from portway.http.headers import Headers

if TYPE_CHECKING:
    from portway.http.client import UpstreamConnection


async def open_connection(
    host: str, port: int, timeout: float, ssl: Any = None, server_hostname: str | None = None
) -> UpstreamConnection:
    from portway.http.client import UpstreamConnection

    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, p = await loop.create_connection(
            lambda: as_protocol(UpstreamConnection(loop)),
            host,
            port,
            ssl=ssl,
            server_hostname=server_hostname if ssl else None,
        )
    return cast(UpstreamConnection, p)


@dataclass(slots=True)
class SimpleResponse:
    status: int
    headers: Headers
    body: bytes


async def simple_request(
    method: str,
    url: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    timeout: float = 5.0,
    max_body: int = 16 * 1024 * 1024,
    ssl: Any = None,
) -> SimpleResponse:
    """One request on a fresh connection (health probes, JWKS, introspection, exporters).
    ``ssl``: the context for ``https`` (default: verified against the system CAs)."""
    import ssl as _ssl

    u = urlsplit(url)
    https = u.scheme == "https"
    host = u.hostname or "127.0.0.1"
    port = u.port or (443 if https else 80)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    async with asyncio.timeout(timeout):
        conn = await open_connection(
            host,
            port,
            timeout,
            ssl=(ssl or _ssl.create_default_context()) if https else None,
            server_hostname=host,
        )
        try:
            extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers or []]
            h: list[tuple[bytes, bytes]] = [(b"connection", b"close")]
            if not any(k == b"host" for k, _ in extra):
                h.insert(0, (b"host", (host if u.port is None else f"{host}:{port}").encode()))
            h += extra
            if body or method in ("POST", "PUT", "PATCH"):
                h.append((b"content-length", str(len(body)).encode()))
            stream = conn.begin(method == "HEAD", timeout)
            conn.write(build_request_head(method, target, h) + body)
            head = await conn.read_head()
            data = await stream.read_all(max_body)
            return SimpleResponse(head.status, head.headers, data)
        finally:
            conn.close()

"""One-shot HTTP calls made by identity plugins (JWKS fetches, token introspection).

Uses the data plane's :func:`portway.http.client.simple_request`. Until that module exists in a
checkout (it is built alongside), a minimal HTTP/1.1 client on asyncio streams + httptools
stands in so the plugins stay usable and testable on their own.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from portway.http.headers import Headers

MAX_BODY = 1024 * 1024


@dataclass(slots=True)
class FetchResponse:
    status: int
    headers: Headers
    body: bytes


async def http_request(
    method: str,
    url: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    timeout: float = 5.0,
) -> FetchResponse:
    """Send one request and read the whole response (``OSError``/``TimeoutError`` on failure)."""
    try:
        from portway.http.client import simple_request
    except ImportError:
        return await asyncio.wait_for(_fallback(method, url, headers or [], body), timeout)
    r = await simple_request(method, url, headers=headers, body=body, timeout=timeout)
    return FetchResponse(r.status, r.headers, r.body)


async def _fallback(
    method: str, url: str, headers: list[tuple[str, str]], body: bytes
) -> FetchResponse:
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise OSError(f"unsupported URL {url!r}")
    port = u.port or (443 if u.scheme == "https" else 80)
    ctx = ssl.create_default_context() if u.scheme == "https" else None
    reader, writer = await asyncio.open_connection(u.hostname, port, ssl=ctx)
    try:
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {u.netloc}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        out = FetchResponse(0, Headers(), b"")
        parts: list[bytes] = []
        done = False

        class _P:
            def on_header(self, name: bytes, value: bytes) -> None:
                out.headers.add_raw(name.lower(), value)

            def on_body(self, data: bytes) -> None:
                parts.append(data)

            def on_message_complete(self) -> None:
                nonlocal done
                done = True

        parser = httptools.HttpResponseParser(_P())
        size = 0
        while not done:
            chunk = await reader.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_BODY:
                raise OSError("response too large")
            parser.feed_data(chunk)
        if not done:
            raise OSError("connection closed before the response completed")
        out.status = parser.get_status_code()
        out.body = b"".join(parts)
        return out
    except httptools.HttpParserError as e:
        raise OSError(f"malformed response: {e}") from e
    finally:
        writer.close()

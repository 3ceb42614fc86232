"""Test helpers: a real in-process gateway and real upstream servers on 127.0.0.1.

    async with run_upstream(handler) as up:          # handler(Request) -> Response
        async with run_gateway({...config dict...}) as gw:
            status, headers, body = await http_get(gw.url + "/x")

``run_gateway`` accepts a config dict; the listener address is replaced by a free port, and
``{up.url}`` strings may be used directly in targets. ``gw.reload(cfg)`` applies a new config.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from portway.config.schema import GatewayConfig
from portway.http.client import simple_request
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.http.server import serve_simple
from portway.server.worker import Worker


async def wait_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port`` (a started process)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise RuntimeError(f"nothing listening on port {port}") from None
            await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class UpstreamHandle:
    url: str
    port: int
    server: asyncio.Server
    requests: list[Request] = field(default_factory=list)

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@asynccontextmanager
async def run_upstream(
    handler: Callable[[Request], Awaitable[Response]] | None = None, port: int | None = None
) -> AsyncIterator[UpstreamHandle]:
    """A real HTTP server; the default handler echoes method, path and headers as JSON."""
    port = port or free_port()
    handle: UpstreamHandle

    async def default(req: Request) -> Response:
        body = await req.body.read_all() if req.body is not None else b""
        return Response.json(
            200,
            {
                "method": req.method,
                "path": req.path,
                "query": req.query.decode(),
                "headers": [[k, v] for k, v in req.headers],
                "body": body.decode("latin-1"),
            },
        )

    h = handler or default

    async def recording(req: Request) -> Response:
        handle.requests.append(req)
        return await h(req)

    server = await serve_simple(recording, "127.0.0.1", port)
    handle = UpstreamHandle(f"http://127.0.0.1:{port}", port, server)
    try:
        yield handle
    finally:
        server.close()


@dataclass
class GatewayHandle:
    worker: Worker
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway(self) -> Any:
        return self.worker.gateway

    async def reload(self, config: dict[str, Any] | GatewayConfig) -> None:
        cfg = config if isinstance(config, GatewayConfig) else _config(config, self.port)
        assert self.worker.gateway is not None
        await self.worker.gateway.apply(cfg)


def _config(config: dict[str, Any], port: int) -> GatewayConfig:
    data = dict(config)
    listeners = [dict(x) for x in data.get("listeners", [{"name": "public"}])]
    listeners[0]["address"] = f"127.0.0.1:{port}"
    data["listeners"] = listeners
    admin = dict(data.get("admin", {}))
    admin.setdefault("enabled", False)
    data["admin"] = admin
    return GatewayConfig.model_validate(data)


@asynccontextmanager
async def run_gateway(config: dict[str, Any]) -> AsyncIterator[GatewayHandle]:
    """An in-process gateway on a free port, on the running event loop."""
    port = free_port()
    w = Worker(_config(config, port))
    await w.start()
    try:
        yield GatewayHandle(w, port)
    finally:
        await w.shutdown()


async def http_get(
    url: str, headers: list[tuple[str, str]] | None = None, timeout: float = 5.0
) -> tuple[int, Headers, bytes]:
    r = await simple_request("GET", url, headers=headers, timeout=timeout)
    return r.status, r.headers, r.body


async def raw_request(port: int, data: bytes, timeout: float = 3.0, read_all: bool = True) -> bytes:
    """Send raw bytes; return everything the server sends until it closes (or timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                out += chunk
                if not read_all:
                    break
    except TimeoutError:
        pass
    finally:
        writer.close()
    return out


def simple_config(upstream_url: str, **route: Any) -> dict[str, Any]:
    """One upstream ``u`` and one catch-all route ``r`` (extra keys go on the route)."""
    r: dict[str, Any] = {"name": "r", "match": {"paths": ["/"]}, "upstream": "u"}
    r.update(route)
    return {"upstreams": {"u": {"targets": [{"url": upstream_url}]}}, "routes": [r]}


Handler = Callable[[bytes, asyncio.StreamWriter, int], Awaitable[bool]]
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def tcp_server(handler: StreamHandler) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 calling ``handler`` per connection; yields its port."""
    port = free_port()
    server = await asyncio.start_server(handler, "127.0.0.1", port)
    try:
        yield port
    finally:
        server.close()


@asynccontextmanager
async def raw_upstream(handler: Handler) -> AsyncIterator[str]:
    """An HTTP/1.1 upstream written byte by byte: ``handler(head, writer, n)`` answers the
    n-th (bodiless) request on a connection and returns whether to keep the connection open."""

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                n += 1
                if not await handler(head, writer, n):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async with tcp_server(conn) as port:
        yield f"http://127.0.0.1:{port}"


def answering(data: bytes, keep: bool = True) -> Handler:
    """A handler that answers every request with ``data``."""

    async def handler(head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        w.write(data)
        await w.drain()
        return keep

    return handler


def assert_plugin_config_error(plugin: str, cfg: str, where: str, message: str) -> None:
    """A route binding ``{name: plugin, config: cfg}`` (YAML flow) is refused at load with an
    error under ``routes[0].plugins[0].config`` on line 6 mentioning ``where`` and
    ``message`` — the contract every plugin's bad-config test checks."""
    from portway.config.errors import ConfigError
    from portway.config.loader import load_config_text

    text = (
        "upstreams: {u: {targets: [{url: 'http://127.0.0.1:9'}]}}\n"
        "routes:\n"
        "  - name: r\n"
        "    upstream: u\n"
        "    plugins:\n"
        f"      - {{name: {plugin}, config: {cfg}}}\n"
    )
    try:
        load_config_text(text, "c.yaml")
    except ConfigError as e:
        errs = e.errors
    else:
        raise AssertionError(f"{plugin} config {cfg} was accepted")
    assert any(
        e.path.startswith("routes[0].plugins[0].config")
        and where in e.path + e.message
        and message in e.message
        and e.line == 6
        for e in errs
    ), errs

"""Test helpers: a real in-process gateway and real upstream servers on 127.0.0.1.

    async with run_upstream(handler) as up:          # handler(Request) -> Response
        async with run_gateway({...config dict...}) as gw:
            status, headers, body = await http_get(gw.url + "/x")

``run_gateway`` accepts a config dict; the listener address is replaced by a free port, and
``{up.url}`` strings may be used directly in targets. ``gw.reload(cfg)`` applies a new config.
"""

from __future__ import annotations

import asyncio
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
from portway.testing import free_port


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


# --- both serving paths ----------------------------------------------------------------------
# One request can be served two ways (proxy/fast.py): task-free, when the upstream pool holds
# an idle keep-alive connection and the route's hooks are sync, or by the general path
# (proxy/handler.py + proxy/forward.py) in a task. Every rule must hold on both. The ``path``
# fixture (tests/conftest.py) runs a test on each; ``ServingPath`` checks which one ran.

#: the route ``with_warm_route`` adds: plugin-free, to the same upstream, so warming the pool
#: runs no hook of the route under test (no rate-limit token spent, no credential needed)
WARM_TARGET = "/__portway_warm"
WARM_REQUEST = b"GET " + WARM_TARGET.encode() + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


def with_warm_route(config: dict[str, Any], upstream: str = "u") -> dict[str, Any]:
    """``config`` with a route ``=/__portway_warm`` (no plugins) to ``upstream`` in front: its
    requests fill the same per-target pool the route under test uses."""
    warm = {"name": "__warm", "match": {"paths": ["=" + WARM_TARGET]}, "upstream": upstream}
    return {**config, "routes": [warm, *config.get("routes", [])]}


def is_warm_request(head: bytes) -> bool:
    """Whether a request head (raw bytes, as an upstream reads it) is a warm-up request."""
    return head.startswith(b"GET " + WARM_TARGET.encode() + b" ")


WARM_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwarm"


class _Replay:
    """A ``StreamReader`` stand-in that returns ``head`` to the first ``readuntil`` and reads
    on from ``reader`` afterwards (for ``warmable``: the head was read to look at it)."""

    def __init__(self, reader: asyncio.StreamReader, head: bytes) -> None:
        self._reader = reader
        self._head: bytes | None = head

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        if self._head is not None:
            head, self._head = self._head, None
            return head
        return await self._reader.readuntil(separator)

    def __getattr__(self, name: str) -> Any:
        assert self._head is None, f"{name} before the replayed head was read"
        return getattr(self._reader, name)


ScriptedHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def warmable(handler: ScriptedHandler) -> ScriptedHandler:
    """A per-connection upstream script that first answers warm-up requests (200, kept
    alive) and runs ``handler`` from the first other request on: on a warmed pool, the
    request under test meets the script on the pooled connection."""

    async def run(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            if not is_warm_request(head):
                break
            w.write(WARM_ANSWER)
            await w.drain()
        await handler(_Replay(r, head), w)  # type: ignore[arg-type]

    return run


class ServingPath:
    """One of the two serving paths a test runs on: ``"cold"`` (no pooled connection: the
    general path) or ``"warm"`` (the pool warmed first: the task-free path).

    ``path.config(cfg)`` is the gateway config to run (cold: no idle connections kept);
    ``await path.prepare(gw)`` warms the pool when warm (a request to ``with_warm_route``'s
    route, or ``request``) and takes the counters; after the requests under test,
    ``path.assert_served(n)`` checks that exactly ``n`` requests of ``route`` were served and
    how: warm, each started task-free (``ProxyApp.fast_requests``) and was finished there
    (``fast``) or handed back (``fallback``: exactly ``fallback`` of them); cold, none was
    started task-free. The route counters are those of ``portway_route_path_requests_total``
    and ``?explain`` (``Metrics.route_paths``), so a parametrization can never silently test
    the general path twice."""

    def __init__(self, name: str) -> None:
        assert name in ("cold", "warm")
        self.name = name
        self.warm = name == "warm"
        self._gw: Any = None
        self._route = "r"
        self._fast0 = 0
        self._paths0: dict[str, int] = {}

    def __repr__(self) -> str:
        return self.name

    def config(self, config: dict[str, Any], upstream: str = "u") -> dict[str, Any]:
        """``config`` for this path: with ``with_warm_route``'s route; cold, every upstream
        also keeps no idle connection (``pool.max_idle: 0``), so no request of the test
        ever finds one — not only the first."""
        cfg = with_warm_route(config, upstream)
        if not self.warm:
            ups = {}
            for name, u in cfg.get("upstreams", {}).items():
                ups[name] = {**u, "pool": {**u.get("pool", {}), "max_idle": 0}}
            cfg["upstreams"] = ups
        return cfg

    @staticmethod
    def _app(gw: Any) -> Any:
        worker = gw.worker if hasattr(gw, "worker") else gw._worker
        assert worker is not None and worker.app is not None
        return worker.app

    @staticmethod
    def _paths(route: str) -> dict[str, int]:
        from portway.observability.metrics import get_metrics

        return get_metrics().route_paths(route)

    async def prepare(
        self, gw: Any, *, route: str = "r", request: bytes = WARM_REQUEST, status: int = 200
    ) -> None:
        """Warm the pool with ``request`` (warm only; it must answer ``status``; an empty
        ``request`` when the test filled the pool itself), then take the counters the
        requests under test are judged by."""
        if self.warm and request:
            out = await raw_request(gw.port, request, timeout=10)
            assert out.startswith(b"HTTP/1.1 %d " % status), out[:300]
        self._gw = gw
        self._route = route
        self._fast0 = self._app(gw).fast_requests
        self._paths0 = self._paths(route)

    def served(self) -> dict[str, int]:
        """Requests of the route since ``prepare``, by serving path; ``started`` counts
        those that started a task-free exchange."""
        assert self._gw is not None, "prepare() first"
        now = self._paths(self._route)
        out = {k: now[k] - self._paths0.get(k, 0) for k in now}
        out["started"] = self._app(self._gw).fast_requests - self._fast0
        return out

    def assert_served(self, n: int = 1, *, fallback: int = 0, local: int = 0) -> None:
        """``n`` requests of the route since ``prepare``: ``local`` of them answered by the
        gateway itself (a hook's answer, a CORS preflight: they never reach the pool, and
        are the same on both paths); warm, the others each started a task-free exchange,
        ``fallback`` of which were handed back to the task."""
        got = self.served()
        assert got["general"] + got["fast"] + got["fallback"] == n, (self.name, got)
        if self.warm:
            exchanges = n - local
            want = {"started": exchanges, "fast": exchanges - fallback}
            assert {k: got[k] for k in want} == want, (self.name, got)
            # a hook's answer is handed to the task (``fallback``); a preflight, which only
            # the general path routes, is ``general``
            assert got["fallback"] + got["general"] == fallback + local, (self.name, got)
            assert local or got["general"] == 0, (self.name, got)
        else:
            assert got["started"] == 0 and got["fast"] == 0, (self.name, got)


def skip_without_nghttp2() -> None:
    """For a test of the nghttp2 HTTP/2 engine when libnghttp2 did not load: skipped on a
    user's machine, a failure where ``PORTWAY_REQUIRE_NGHTTP2=1`` (``.ci/run``: CI runs
    both engines)."""
    import os

    import pytest

    if os.environ.get("PORTWAY_REQUIRE_NGHTTP2") == "1":
        pytest.fail("libnghttp2 did not load, and PORTWAY_REQUIRE_NGHTTP2=1")
    pytest.skip("libnghttp2 is not available")

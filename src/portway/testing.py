"""A testing kit for plugin authors: a real gateway and a mock upstream on local sockets.

The built-in plugins are tested this way — a real listener, a real upstream, real HTTP — and
so can yours, without mocks::

    from portway.testing import MockUpstream, TestGateway

    async def test_tenant_header() -> None:
        async with MockUpstream() as up, TestGateway(
            {"routes": [{"name": "api", "upstream": "up", "match": {"paths": ["/"]},
                         "plugins": [{"name": "add_tenant"}]}]},
            upstream=up,
            plugins=[AddTenantPlugin],
        ) as gw:
            r = await gw.get("/x", headers={"host": "acme.example.com"})
            assert r.status == 200
            assert up.requests[-1].headers.get("x-tenant") == "acme"

Both are async context managers on the running event loop (pytest-asyncio, anyio or
``asyncio.run``). Nothing here is used by the gateway itself.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from portway.config.schema import GatewayConfig
from portway.http.client import SimpleResponse, simple_request
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.pipeline.plugin import Plugin
from portway.pipeline.registry import registry

__all__ = ["MockUpstream", "RecordedRequest", "SimpleResponse", "TestGateway", "free_port"]

Handler = Callable[[Request], Awaitable[Response]]


#: ports :func:`free_port` handed out in this process (never the same one twice)
_GIVEN: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server started a moment later.

    Chosen below the kernel's ephemeral range (32768+ on Linux) rather than by binding port 0:
    between this call and the server's bind, any outgoing connection of this or another
    process may be given an ephemeral port — a port 0 pick is one of those, a port from
    20000-32000 is not. Checked bindable, and never handed out twice in one process."""
    for _ in range(500):
        port = random.randint(20000, 32000)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket() as s:  # a crowded range: what the kernel gives
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RecordedRequest:
    """What the mock upstream received: method, path, query, headers and the whole body."""

    def __init__(self, request: Request, body: bytes) -> None:
        self.method = request.method
        self.path = request.path
        self.query = request.query.decode("latin-1")
        self.headers: Headers = request.headers
        self.body = body


class MockUpstream:
    """An HTTP/1.1 server on 127.0.0.1 that records every request (``requests``) and answers
    with ``handler(request)`` — by default ``200`` and a JSON echo of the request."""

    __test__ = False  # not a pytest test class

    def __init__(self, handler: Handler | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[RecordedRequest] = []
        self._handler = handler
        self._server: Any = None

    async def _serve(self, req: Request) -> Response:
        body = await req.body.read_all() if req.body is not None else b""
        self.requests.append(RecordedRequest(req, body))
        if self._handler is not None:
            return await self._handler(req)
        return Response.json(
            200,
            {
                "method": req.method,
                "path": req.path,
                "query": req.query.decode("latin-1"),
                "headers": [[k, v] for k, v in req.headers],
                "body": body.decode("latin-1"),
            },
        )

    async def __aenter__(self) -> MockUpstream:
        from portway.http.server import serve_simple

        self._server = await serve_simple(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class TestGateway:
    """A whole gateway (listener, routing, plugins, upstream pools) on a free local port.

    ``config`` is a ``portway.yaml`` document as a dict: its first listener gets the free
    port, the admin API is off unless the config turns it on. With ``upstream``, an upstream
    named ``"up"`` pointing at it is added when the config has none of that name.
    ``plugins`` are plugin classes to register before the config is validated (the registry
    is process-wide: a later registration of the same name replaces it).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        upstream: MockUpstream | None = None,
        plugins: list[type[Plugin[Any]]] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        for cls in plugins or []:
            registry.register(cls)
        data = dict(config)
        listeners = [dict(x) for x in data.get("listeners", [{"name": "public"}])]
        listeners[0]["address"] = f"127.0.0.1:{self.port}"
        data["listeners"] = listeners
        data.setdefault("admin", {"enabled": False})
        if upstream is not None:
            ups = dict(data.get("upstreams", {}))
            ups.setdefault("up", {"targets": [{"url": upstream.url}]})
            data["upstreams"] = ups
        import orjson

        from portway.config.loader import load_config_text

        # through the loader, so a bad config fails here with its paths, as `portway run` would
        self.config: GatewayConfig = load_config_text(orjson.dumps(data).decode(), "<test>")
        self._worker: Any = None

    @property
    def gateway(self) -> Any:
        """The running :class:`portway.runtime.gateway.Gateway` (``gateway.graph`` etc.)."""
        return self._worker.gateway if self._worker is not None else None

    async def __aenter__(self) -> TestGateway:
        from portway.server.worker import Worker

        self._worker = Worker(self.config)
        await self._worker.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._worker is not None:
            await self._worker.shutdown()

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float = 5.0,
    ) -> SimpleResponse:
        """One request on a fresh connection; the response body is read whole."""
        return await simple_request(
            method,
            self.url + path,
            headers=list((headers or {}).items()),
            body=body,
            timeout=timeout,
        )

    async def get(self, path: str, *, headers: Mapping[str, str] | None = None) -> SimpleResponse:
        return await self.request("GET", path, headers=headers)

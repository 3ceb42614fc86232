"""Fixtures for upstream tests (helpers live in ``tests/upstream/support.py``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.upstream.support import CtxFactory, DnsServer, HttpServer, _DnsProtocol, free_port
from tests.upstream.support import make_ctx as _make_ctx


@pytest.fixture
def make_ctx() -> CtxFactory:
    return _make_ctx


@pytest.fixture
async def http_servers() -> AsyncIterator[Callable[[], Awaitable[HttpServer]]]:
    made: list[HttpServer] = []

    async def make() -> HttpServer:
        s = HttpServer(free_port())
        await s.start()
        made.append(s)
        return s

    yield make
    for s in made:
        await s.stop()


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    server = DnsServer()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _DnsProtocol(server), local_addr=("127.0.0.1", 0)
    )
    server.port = transport.get_extra_info("sockname")[1]
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            transport.close()

"""The listener drains its accept queue per readiness (``server/listener.py:AcceptServer``).

libuv 1.50+ takes one connection per loop iteration; a burst of connections then waited
behind as many iterations. These tests hold the accept queue full, let the listener look
once, and count what it took; then check that what it took is served and that closing stops
accepting.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from portway.server.listener import AcceptServer, bind_socket
from tests.server.tls_kit import Pki


class _Echo:
    """A protocol that answers each read with ``ok`` and counts its connections."""

    made: list[_Echo] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        _Echo.made.append(self)

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"ok")  # type: ignore[attr-defined]

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        pass


async def test_one_readiness_takes_every_queued_connection() -> None:
    loop = asyncio.get_running_loop()
    lsock = bind_socket("127.0.0.1:0", reuse_port=False)
    port = lsock.getsockname()[1]
    srv = AcceptServer(loop, lsock, lambda: _Echo(), None)  # type: ignore[arg-type,return-value]
    _Echo.made = []
    clients = []
    try:
        # the kernel completes these handshakes from its backlog: all 40 wait to be accepted
        for _ in range(40):
            c = socket.create_connection(("127.0.0.1", port))
            c.setblocking(False)
            clients.append(c)
        srv._serving = True
        srv._accept()  # one readiness of the listening socket
        assert len(srv._starting) == 40
        with contextlib.suppress(BlockingIOError):
            lsock.accept()  # nothing is left in the queue
            raise AssertionError("a connection was left in the accept queue")
        while len(_Echo.made) < 40:
            await asyncio.sleep(0.01)
        # each of them is served
        c = clients[-1]
        await loop.sock_sendall(c, b"x")
        assert await asyncio.wait_for(loop.sock_recv(c, 2), 5) == b"ok"
    finally:
        for c in clients:
            c.close()
        srv.close()


async def test_close_stops_accepting() -> None:
    loop = asyncio.get_running_loop()
    lsock = bind_socket("127.0.0.1:0", reuse_port=False)
    port = lsock.getsockname()[1]
    srv = AcceptServer(loop, lsock, lambda: _Echo(), None)  # type: ignore[arg-type,return-value]
    srv.start()
    assert srv.is_serving()
    srv.close()
    await asyncio.wait_for(srv.wait_closed(), 5)
    assert not srv.is_serving()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        pass  # refused: nothing listens any more
    else:
        raise AssertionError("the closed listener still took a connection")


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.01)


async def test_tls_connections_are_set_up_without_a_task(tmp_path: Path) -> None:
    """The set-up coroutine (``connect_accepted_socket`` with the TLS context) is driven by
    the listener, not by a task: held while the handshake runs, dropped once it is done —
    and a client that fails its handshake leaves nothing behind."""
    loop = asyncio.get_running_loop()
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com")
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(cert, key)
    lsock = bind_socket("127.0.0.1:0", reuse_port=False)
    port = lsock.getsockname()[1]
    srv = AcceptServer(loop, lsock, lambda: _Echo(), sctx)  # type: ignore[arg-type,return-value]
    _Echo.made = []
    tasks_before = len(asyncio.all_tasks())
    srv.start()
    try:
        # a plain-text client: its handshake fails, the set-up is dropped
        bad = socket.create_connection(("127.0.0.1", port))
        bad.setblocking(False)
        await asyncio.wait_for(_until(lambda: len(srv._starting) == 1), 10)  # in its handshake
        assert len(asyncio.all_tasks()) == tasks_before  # no task per connection
        await loop.sock_sendall(bad, b"GET / HTTP/1.1\r\n\r\n")
        await asyncio.wait_for(_until(lambda: not srv._starting), 10)
        assert not _Echo.made or _Echo.made[0].transport.is_closing()
        bad.close()
        # TLS clients are served, and nothing of their set-up is held afterwards
        ctx = pki.client_context()
        for _ in range(3):
            r, w = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="a.example.com"
            )
            w.write(b"x")
            assert await asyncio.wait_for(r.readexactly(2), 10) == b"ok"
            w.close()
        await asyncio.wait_for(_until(lambda: not srv._starting), 10)
    finally:
        srv.close()

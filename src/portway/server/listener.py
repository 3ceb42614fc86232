"""Client listeners (plain and TLS) bound with SO_REUSEPORT so workers share a port.

Accepting is ours (:class:`AcceptServer`), not the event loop's ``create_server``: libuv
(since 1.50; uvloop 0.22+ bundles 1.52) takes **one** connection off the accept queue per
loop iteration. An iteration of a busy worker serves every ready client (256 requests at
c256, several ms), so a burst of new connections — every load test's start, a client pool
reconnecting after a deploy — was admitted one per iteration: the k-th connection waited
behind k-1 rounds of everyone else's requests, up to ~1-2 s for the last of 256 (seen with
``strace``: one ``accept4`` per ``epoll_pwait``; those waits were the c256 p99 of
``bench/run.py``). :class:`AcceptServer` drains the queue (up to :data:`ACCEPT_BATCH`) each
time the listening socket is readable, as nginx with ``multi_accept on`` does.

TLS listeners (session 9) are handed to the loop's server again
(:meth:`AcceptServer.start_loop_server`): uvloop's C accept path starts a TLS connection for
~70 k fewer instructions than ``connect_accepted_socket`` (of ~3.06 M per full handshake,
callgrind), and at that cost per connection the one-per-iteration accept is not what bounds
a burst. ``PORTWAY_TLS_ACCEPT=drain`` keeps them on the drain.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl
from collections.abc import Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from portway.config.schema import LimitsConfig, ListenerConfig
from portway.http.flow import as_protocol
from portway.http.forwarded import TrustedProxies
from portway.http.server import App, ServerConnection

if TYPE_CHECKING:
    from portway.server.tls import ListenerTls

log: Final = logging.getLogger("portway.server")

#: connections taken off the accept queue per readiness of the listening socket, at most
#: (bounds one iteration's work; what is left is taken on the next)
ACCEPT_BATCH: Final = 1024
#: seconds accepting pauses after running out of file descriptors or memory
ACCEPT_RETRY: Final = 0.5
#: TLS listeners accept with :meth:`AcceptServer._accept` too (``PORTWAY_TLS_ACCEPT=drain``),
#: not with the loop's server (the default: cheaper per handshake, see ``start_loop_server``)
_DRAIN_TLS: Final = os.environ.get("PORTWAY_TLS_ACCEPT") == "drain"
#: accept errors that concern the whole process, not one connection
_RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class AcceptServer:
    """A listening socket served by our own accept loop (see the module docstring); what
    the worker uses of ``asyncio.Server``: ``sockets``, ``close``, ``is_serving``,
    ``wait_closed``.

    Each accepted socket becomes a transport through ``loop.connect_accepted_socket`` (with
    the listener's TLS context: the handshake runs there). Its coroutine is driven here, not
    by a task (:meth:`_drive`): it runs at once up to the future it waits on (the
    connection made, or the TLS handshake done) and is resumed by that future's done
    callback — no task object, no extra loop pass before the transport exists and none
    after the handshake (session 9: accepting in a task per connection cost a TLS
    handshake more than the loop's own server did). The coroutines in progress are held
    in ``_starting``; a connection that fails its TLS handshake is logged at debug level,
    as the loop's own server did. Closing stops accepting and closes the listening socket;
    connections already made are not touched."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.BaseProtocol],
        sslctx: ssl.SSLContext | None,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._ssl = sslctx
        self.sockets: list[socket.socket] = [sock]
        self._serving = False
        self._closed = asyncio.Event()
        #: connection set-ups in progress: their coroutines, suspended on a future (which
        #: holds only the callback that resumes them)
        self._starting: set[Coroutine[Any, Any, Any]] = set()
        #: a TLS listener's socket served by the loop's own server (:meth:`start_loop_server`)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> None:
        self._serving = True
        self._loop.add_reader(self._sock, self._accept)

    async def start_loop_server(self) -> None:
        """Serve the socket with the loop's ``create_server`` instead of :meth:`_accept`
        (TLS listeners): uvloop accepts in C and starts the TLS protocol without a Python
        socket object, a coroutine or a waiter per connection — measured 2.3 % fewer
        instructions per full handshake than ``connect_accepted_socket``, task or not. It
        takes one connection per loop iteration (the module docstring)."""
        self._server = await self._loop.create_server(
            self._factory, sock=self._sock, ssl=self._ssl, backlog=4096
        )
        self._serving = True

    def _accept(self) -> None:
        sock = self._sock
        loop = self._loop
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _RESOURCE_ERRNOS:
                    # the queue keeps its connections; try again shortly (asyncio does too)
                    log.error("cannot accept connections (%s); retrying in %gs", e, ACCEPT_RETRY)
                    loop.remove_reader(sock)
                    loop.call_later(ACCEPT_RETRY, self._resume)
                    return
                continue  # that connection is gone (ECONNABORTED, …); the next one may not be
            conn.setblocking(False)
            self._drive(loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl), None)

    def _drive(self, coro: Coroutine[Any, Any, Any], _fut: object) -> None:
        """Run ``coro`` up to its next suspension on an asyncio future (what a task's step
        does, without the task): then hold it and resume it from the future's callback; when
        it returns or raises, drop it. ``connect_accepted_socket`` awaits only futures of
        this loop (one: the connection's or the handshake's waiter); anything else it
        yielded would be a bug, closed and logged."""
        try:
            fut = coro.send(None)
        except StopIteration:
            self._starting.discard(coro)
            return
        except (Exception, asyncio.CancelledError) as e:
            self._starting.discard(coro)
            log.debug("connection set-up failed: %r", e)
            return
        if getattr(fut, "_asyncio_future_blocking", None):
            fut._asyncio_future_blocking = False
            self._starting.add(coro)
            fut.add_done_callback(partial(self._drive, coro))
            return
        self._starting.discard(coro)
        coro.close()
        log.error("connection set-up yielded %r, not a future: connection dropped", fut)

    def _resume(self) -> None:
        if self._serving:
            self._loop.add_reader(self._sock, self._accept)

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        if not self._serving:
            return
        self._serving = False
        if self._server is not None:
            self._server.close()  # (closes the socket: uvloop detaches our object from it)
        else:
            self._loop.remove_reader(self._sock)
        self._sock.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def make_ssl_context(cfg: ListenerConfig) -> ssl.SSLContext | None:
    """The front context of a TLS listener (see :mod:`portway.server.tls`), or ``None``."""
    tls = make_listener_tls(cfg)
    return tls.front if tls is not None else None


def make_listener_tls(cfg: ListenerConfig) -> ListenerTls | None:
    if cfg.tls is None:
        return None
    # only TLS listeners pay for cryptography and the certificate-expiry gauge
    from portway.server.tls import ListenerTls

    return ListenerTls(cfg.name, cfg.tls, cfg.http2)


def bind_socket(address: str, reuse_port: bool = True) -> socket.socket:
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def start_listener(
    cfg: ListenerConfig,
    app: App,
    limits_ref: Any,
    trusted_ref: Any,
    sock: socket.socket | None = None,
    tls: ListenerTls | None = None,
) -> AcceptServer:
    """Serve ``app`` on the listener; ``limits_ref()``/``trusted_ref()`` give the current
    settings so reloads apply to new connections. ``tls``: the listener's certificates, kept
    by the caller to swap them on reload (built here from ``cfg`` when not given)."""
    loop = asyncio.get_running_loop()
    if tls is None:
        tls = make_listener_tls(cfg)
    sslctx = tls.front if tls is not None else None
    scheme = "https" if sslctx else "http"

    def factory() -> asyncio.BaseProtocol:
        limits: LimitsConfig = limits_ref()
        trusted: TrustedProxies = trusted_ref()
        conn = ServerConnection(
            app,
            limits,
            trusted,
            scheme,
            loop,
            http2=cfg.http2,
            underscores=cfg.underscores_in_headers,
        )
        conn.listener = cfg.name
        conn.alt_svc = alt_svc
        return as_protocol(conn)

    if sock is None:
        sock = bind_socket(cfg.address)
    alt_svc: bytes | None = None
    if cfg.quic:
        # the QUIC endpoint (started by the worker) takes this port number unless quic_port
        from portway.server.quic import alt_svc_value

        alt_svc = alt_svc_value(cfg, sock.getsockname()[1])
    sock.listen(4096)  # (again, for a socket bound elsewhere: what create_server did)
    sock.setblocking(False)
    srv = AcceptServer(loop, sock, factory, sslctx)
    if sslctx is not None and not _DRAIN_TLS:
        await srv.start_loop_server()
    else:
        srv.start()
    return srv

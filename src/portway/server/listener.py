"""Client listeners (plain and TLS) bound with SO_REUSEPORT so workers share a port."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING, Any

from portway.config.schema import LimitsConfig, ListenerConfig
from portway.http.flow import as_protocol
from portway.http.forwarded import TrustedProxies
from portway.http.server import App, ServerConnection

if TYPE_CHECKING:
    from portway.server.tls import ListenerTls


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
) -> asyncio.Server:
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
    return await loop.create_server(factory, sock=sock, ssl=sslctx, backlog=4096)

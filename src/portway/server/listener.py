"""Client listeners (plain and TLS) bound with SO_REUSEPORT so workers share a port."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

from portway.config.schema import LimitsConfig, ListenerConfig
from portway.http.flow import as_protocol
from portway.http.forwarded import TrustedProxies
from portway.http.server import App, ServerConnection


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def make_ssl_context(cfg: ListenerConfig) -> ssl.SSLContext | None:
    t = cfg.tls
    if t is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(t.cert, t.key)
    ctx.set_alpn_protocols(["h2", "http/1.1"] if cfg.http2 else ["http/1.1"])
    if t.client_ca:
        ctx.load_verify_locations(t.client_ca)
    ctx.verify_mode = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[t.client_cert]
    return ctx


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
) -> asyncio.Server:
    """Serve ``app`` on the listener; ``limits_ref()``/``trusted_ref()`` give the current
    settings so reloads apply to new connections."""
    loop = asyncio.get_running_loop()
    sslctx = make_ssl_context(cfg)
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
        return as_protocol(conn)

    if sock is None:
        sock = bind_socket(cfg.address)
    return await loop.create_server(factory, sock=sock, ssl=sslctx, backlog=4096)

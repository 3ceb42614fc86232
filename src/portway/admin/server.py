"""Starting the admin listener."""

from __future__ import annotations

import asyncio
import logging

from portway.admin.app import AdminApp, is_loopback

log = logging.getLogger("portway.admin")


class AdminConfigError(ValueError):
    """The admin section cannot be served safely as configured."""


def check_admin_config(app: AdminApp) -> None:
    """Refuse to expose an unauthenticated admin API beyond loopback, or a token-less one."""
    cfg = app.config
    host = cfg.address.rpartition(":")[0]
    if not cfg.auth and not is_loopback(host):
        raise AdminConfigError(
            f"admin.auth: false is only allowed on a loopback address, not {cfg.address}"
        )
    if app.auth_required and not cfg.token:
        raise AdminConfigError("admin.token is required when admin.auth is true")


async def serve_admin(
    app: AdminApp, host: str | None = None, port: int | None = None
) -> asyncio.Server:
    """Serve ``app`` on ``admin.address`` (or ``host``/``port``, e.g. port 0 in tests) with the
    gateway's hardened HTTP/1.1 server."""
    from portway.http.server import serve_simple

    check_admin_config(app)
    h, _, p = app.config.address.rpartition(":")
    bind_host = host if host is not None else h.strip("[]")
    bind_port = port if port is not None else int(p)
    server = await serve_simple(app.handle, bind_host, bind_port)
    for sock in server.sockets:
        log.info("admin API listening on %s", sock.getsockname()[:2])
    return server

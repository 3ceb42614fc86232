"""Starting the admin listener."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from portway.admin.app import AdminApp
from portway.admin.responses import is_loopback
from portway.config.schema import AdminConfig

if TYPE_CHECKING:
    from portway.runtime.gateway import Gateway
    from portway.server.health import Health

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
        raise AdminConfigError(
            "admin.token is required when admin.auth is true (set admin.token, e.g. "
            '"${PORTWAY_ADMIN_TOKEN}", or admin.auth: false on a loopback address, '
            "or admin.enabled: false)"
        )


async def serve_admin(
    app: AdminApp,
    host: str | None = None,
    port: int | None = None,
    *,
    health: Health | None = None,
    config_hash: Callable[[], Any] = lambda: None,
) -> asyncio.Server:
    """Serve ``app`` on ``admin.address`` (or ``host``/``port``, e.g. port 0 in tests) with the
    gateway's hardened HTTP/1.1 server; with ``health``, also the probe paths
    (``admin/probes.py``)."""
    from portway.admin.probes import Handler, with_probes
    from portway.http.server import serve_simple

    check_admin_config(app)
    h, _, p = app.config.address.rpartition(":")
    bind_host = host if host is not None else h.strip("[]")
    bind_port = port if port is not None else int(p)
    handler: Handler = app.handle
    if health is not None:
        handler = with_probes(handler, health, config_hash)
    server = await serve_simple(handler, bind_host, bind_port)
    for sock in server.sockets:
        log.info("admin API listening on %s", sock.getsockname()[:2])
    return server


async def start_admin(
    gateway: Gateway, config: AdminConfig, *, worker: Any = None
) -> asyncio.Server | None:
    """Build the admin API over ``gateway`` and serve it on ``config.address``; also points
    the process metrics at the gateway's live upstreams for target-state gauges.

    An admin section that cannot be served safely (no token, or ``auth: false`` off loopback)
    is logged as an error and the admin API stays off: the gateway itself still serves."""
    from portway.admin.control import RuntimeControl
    from portway.observability.metrics import get_metrics

    metrics = get_metrics()
    control = RuntimeControl(gateway, workers=getattr(worker, "workers", None))
    metrics.set_upstreams_source(control.upstreams)
    app = AdminApp(control, config, metrics=metrics)
    try:
        check_admin_config(app)
    except AdminConfigError as e:
        log.warning("admin API not started: %s", e)
        return None
    await app.dashboard.start()
    return await serve_admin(
        app,
        health=getattr(worker, "health", None),
        config_hash=lambda: getattr(gateway.graph_ref.current, "config_hash", None),
    )

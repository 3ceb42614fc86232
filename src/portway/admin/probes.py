"""Probe endpoints on the admin listener: ``GET /healthz`` (liveness) and ``GET /readyz``
(readiness), answered before the admin API's authentication, so Kubernetes or a container
HEALTHCHECK can call them without the admin token. They reveal only the lifecycle state and
the hash of the serving config.

``/readyz`` answers 200 ``{"status": "ready"}`` or 503 with ``"starting"`` (no config loaded
or listeners not bound yet) or ``"draining"`` (shutting down; in-flight requests finish).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from portway.http.models import Request, Response
from portway.server.health import Health

Handler = Callable[[Request], Awaitable[Response]]

PATHS = frozenset({"/healthz", "/livez", "/readyz"})


def with_probes(handler: Handler, health: Health, config_hash: Callable[[], Any]) -> Handler:
    """``handler`` with the probe paths answered in front of it."""

    async def handle(request: Request) -> Response:
        path = request.path
        if path not in PATHS:
            return await handler(request)
        if request.method not in ("GET", "HEAD"):
            resp = Response.json(405, {"error": {"code": "method_not_allowed"}})
            resp.headers.set("allow", "GET, HEAD")
            return resp
        if path == "/readyz":
            resp = Response.json(
                200 if health.ready else 503,
                {"status": health.state, "config_hash": config_hash()},
            )
        else:
            resp = Response.json(200, {"status": "alive"})
        resp.headers.set("cache-control", "no-store")
        return resp

    return handle

"""``portway demo``: four small backends plus the gateway on the bundled example config."""

from __future__ import annotations

import asyncio
import os
from importlib import resources

import orjson

from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.http.server import serve_simple

DATA = {
    "users": [{"id": 1, "name": "Ada"}, {"id": 2, "name": "Linus"}],
    "orders": [{"id": 7, "user": 1, "total": 42.5}, {"id": 8, "user": 2, "total": 9.99}],
    "products": [{"sku": "p-1", "name": "keyboard"}, {"sku": "p-2", "name": "mouse"}],
    "flaky": [{"note": "every third request fails with 503"}],
}


def backend(name: str) -> object:
    served = 0

    async def handle(req: Request) -> Response:
        nonlocal served
        if req.body is not None:
            await req.body.read_all(1 << 20)
        served += 1
        h = Headers()
        h.set("content-type", "application/json")
        h.set("x-backend", name)
        if req.path.startswith("/cached"):
            h.set("cache-control", "public, max-age=30")
        if name == "flaky" and served % 3 == 0:
            return Response(503, h, orjson.dumps({"service": name, "error": "flaky failure"}))
        body = {
            "service": name,
            "path": req.path,
            "method": req.method,
            "items": DATA[name],
            "forwarded_for": req.headers.get("x-forwarded-for"),
            "request_id": req.headers.get("x-request-id"),
        }
        return Response(200, h, orjson.dumps(body))

    return handle


def demo_config_text() -> str:
    return resources.files("portway.examples").joinpath("demo.yaml").read_text()


async def start_backends(ports: dict[str, int]) -> list[asyncio.Server]:
    out = []
    for name, port in ports.items():
        out.append(await serve_simple(backend(name), "127.0.0.1", port))  # type: ignore[arg-type]
    return out


def demo_ports() -> dict[str, int]:
    return {
        "users": int(os.environ.get("DEMO_USERS_PORT", "9001")),
        "orders": int(os.environ.get("DEMO_ORDERS_PORT", "9002")),
        "products": int(os.environ.get("DEMO_PRODUCTS_PORT", "9003")),
        "flaky": int(os.environ.get("DEMO_FLAKY_PORT", "9004")),
    }


def banner(port: int, admin_port: int, token: str) -> str:
    base = f"http://127.0.0.1:{port}"
    admin = f"http://127.0.0.1:{admin_port}"
    return "\n".join(
        [
            f"Portway demo is running on {base} (admin API on {admin})",
            f"Dashboard: {admin}/dashboard   (admin token: {token})",
            "Try:",
            f"  curl -i {base}/users",
            f"  curl -i {base}/orders/7",
            f"  curl -i {base}/api/products/list",
            f"  curl -i {base}/maintenance",
            f"  curl -i {base}/nowhere            # 404 JSON error",
            f"  curl -i {base}/secure             # 401: key_auth wants a key",
            f"  curl -i -H 'apikey: demo-key' {base}/secure",
            f"  curl -i {base}/limited            # 5 per 10 s: see the RateLimit headers",
            f"  curl -i {base}/cached             # X-Cache: MISS, then HIT",
            f"  curl -i {base}/flaky              # every third request fails",
            f"  curl -i {base}/canary             # split: 1 of 5 goes to the products service",
            f"  curl -s -H 'X-Portway-Debug: demo-debug' '{base}/users?explain'",
            f"  curl -s -H 'Authorization: Bearer {token}' {admin}/status",
            "Press Ctrl-C to stop.",
        ]
    )

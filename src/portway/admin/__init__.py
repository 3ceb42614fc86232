"""The admin API: its own listener, bearer token, OpenAPI 3.1 spec (see ``app``).

The package's names are imported on first use: a worker imports ``admin.dashboard.errors``
(the recent-errors recorder) whether or not it serves the admin API, and the app with its
OpenAPI models costs several MB that a worker without the admin listener never needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portway.admin.app import AdminApp
    from portway.admin.control import GatewayControl, RuntimeControl
    from portway.admin.server import serve_admin

__all__ = ["AdminApp", "GatewayControl", "RuntimeControl", "serve_admin"]

_WHERE = {
    "AdminApp": "portway.admin.app",
    "GatewayControl": "portway.admin.control",
    "RuntimeControl": "portway.admin.control",
    "serve_admin": "portway.admin.server",
}


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'portway.admin' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)

"""The admin API: its own listener, bearer token, OpenAPI 3.1 spec (see ``app``)."""

from portway.admin.app import AdminApp
from portway.admin.control import GatewayControl, RuntimeControl
from portway.admin.server import serve_admin

__all__ = ["AdminApp", "GatewayControl", "RuntimeControl", "serve_admin"]

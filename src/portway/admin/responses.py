"""Response helpers and error classes of the admin API."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from portway.errors import GatewayError, error_body
from portway.http.headers import Headers
from portway.http.models import Request, Response


class UnsupportedMediaTypeError(GatewayError):
    status = 415
    code = "unsupported_media_type"


class InvalidConfigError(GatewayError):
    """422 with the list of configuration problems."""

    status = 422
    code = "invalid_config"

    def __init__(self, errors: Sequence[Any], message: str = "the configuration is invalid"):
        super().__init__(message)
        self.errors = [issue_dict(e) for e in errors]


class UnavailableFeatureError(GatewayError):
    status = 503
    code = "feature_unavailable"


def issue_dict(e: Any) -> dict[str, Any]:
    """A config problem as ``{"path", "line", "column", "message"}``."""
    if isinstance(e, Mapping):
        return {
            "path": str(e.get("path", "")),
            "line": e.get("line"),
            "column": e.get("column"),
            "message": str(e.get("message", "")),
        }
    to_dict = getattr(e, "to_dict", None)
    if callable(to_dict):
        return issue_dict(to_dict())
    return {"path": "", "line": None, "column": None, "message": str(e)}


def is_loopback(host: str) -> bool:
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def json_response(status: int, data: Any, headers: Sequence[tuple[str, str]] = ()) -> Response:
    h = Headers.from_pairs(headers)
    h.set("content-type", "application/json")
    return Response(status=status, headers=h, body=orjson.dumps(data))


def error_response(e: GatewayError) -> Response:
    if isinstance(e, InvalidConfigError):
        body = orjson.dumps(
            {
                "error": e.message,
                "code": e.code,
                "status": e.status,
                "request_id": None,
                "errors": e.errors,
            }
        )
    else:
        body = error_body(e.status, e.message, e.code, None)
    h = Headers.from_pairs(e.headers)
    h.set("content-type", "application/json")
    return Response(status=e.status, headers=h, body=body)


def media_type(request: Request) -> str | None:
    ct = request.headers.get("content-type")
    if ct is None:
        return None
    return ct.split(";", 1)[0].strip().lower()

"""The gateway's error tree.

Every error the gateway itself generates is a :class:`GatewayError` carrying an HTTP status, a
short machine-readable ``code`` and a human message. The data plane turns it into the JSON body
``{"error": message, "code": code, "status": N, "request_id": id}``; upstream 4xx/5xx responses
are never wrapped.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson


class GatewayError(Exception):
    """An error answered to the client with ``status`` and a JSON body."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        source: str | None = None,
    ) -> None:
        self.message = message or self.code.replace("_", " ")
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)
        #: which component raised it (plugin name, "upstream", ...); for logs, not for clients
        self.source = source
        super().__init__(self.message)

    def body(self, request_id: str | None) -> bytes:
        return error_body(self.status, self.message, self.code, request_id)


class BadRequestError(GatewayError):
    status = 400
    code = "bad_request"


class NotFoundError(GatewayError):
    status = 404
    code = "no_route"


class MethodNotAllowedError(GatewayError):
    status = 405
    code = "method_not_allowed"


class RequestTimeoutError(GatewayError):
    status = 408
    code = "request_timeout"


class PayloadTooLargeError(GatewayError):
    status = 413
    code = "payload_too_large"


class UriTooLongError(GatewayError):
    status = 414
    code = "uri_too_long"


class HeadersTooLargeError(GatewayError):
    status = 431
    code = "request_header_fields_too_large"


class UnauthorizedError(GatewayError):
    status = 401
    code = "unauthorized"


class ForbiddenError(GatewayError):
    status = 403
    code = "forbidden"


class TooManyRequestsError(GatewayError):
    status = 429
    code = "rate_limited"


class UpstreamError(GatewayError):
    """The upstream refused, reset or broke the exchange before a response was relayed."""

    status = 502
    code = "bad_gateway"


class UpstreamConnectError(UpstreamError):
    code = "upstream_connect_failed"


class UpstreamTimeoutError(GatewayError):
    status = 504
    code = "upstream_timeout"


class UnavailableError(GatewayError):
    """No target can take the request (all down, circuit open, overload)."""

    status = 503
    code = "service_unavailable"


class UpstreamOverloadedError(UnavailableError):
    """A target's connection pool is full (``pool.max_connections``) and the request was not
    given a connection within ``pool.queue_timeout`` (or the queue, ``pool.max_queue``, was
    full). The gateway protecting the target, not the target failing: it counts against
    neither its passive health nor its circuit breaker, and is never retried. Envoy's
    ``x-envoy-overloaded`` equivalent rides along as ``x-portway-overloaded: true``."""

    code = "upstream_overloaded"

    def __init__(self, message: str | None = None, *, source: str | None = None) -> None:
        super().__init__(
            message or "upstream connection limit reached",
            headers=[("x-portway-overloaded", "true")],
            source=source,
        )


class PluginError(GatewayError):
    status = 500
    code = "plugin_error"


def error_body(status: int, message: str, code: str, request_id: str | None) -> bytes:
    return orjson.dumps(
        {"error": message, "code": code, "status": status, "request_id": request_id}
    )

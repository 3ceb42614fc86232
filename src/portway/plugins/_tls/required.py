"""``match.tls.client_cert: true``: the route answers 403 without a verified client certificate.

A route that requires a client certificate is still *matched* by a request without one, and
the request is refused, rather than skipped in favour of a less specific route: silently
falling through to another route (say, a public catch-all) would turn a missing certificate
into a different answer from a different upstream. This is what nginx does with
``ssl_verify_client optional`` and ``if ($ssl_client_verify != SUCCESS) { return 403; }``, and
what Envoy's RBAC on ``authenticated`` peers does (403).

The listener stores ``peercert`` only for a certificate its ``client_ca`` verified (see
``ServerConnection.connection_made``), so its presence is the whole check.
"""

from __future__ import annotations

from typing import ClassVar

from portway.errors import ForbiddenError
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import EmptyConfig, Plugin, PluginConfig, PluginEnv, Stage


class ClientCertRequired(Plugin[EmptyConfig]):
    """First step of a route with ``match.tls.client_cert: true``."""

    name = "tls_client_cert"
    stage = Stage.edge
    Config: ClassVar[type[PluginConfig]] = EmptyConfig
    sync_hooks = True

    def __init__(self, route: str) -> None:
        super().__init__(EmptyConfig(), PluginEnv(route=route))

    async def on_request(self, ctx: RequestContext) -> Response | None:
        if not ctx.extra.get("peercert"):
            raise ForbiddenError(
                "this route requires a client certificate", source="tls_client_cert"
            )
        return None

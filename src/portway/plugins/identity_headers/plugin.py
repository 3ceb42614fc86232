"""The ``identity_headers`` plugin."""

from __future__ import annotations

from typing import ClassVar

from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, PluginEnv, Stage
from portway.plugins._identity.headers import (
    STANDARD,
    header_value,
    lookup_claim,
    set_consumer_headers,
)
from portway.plugins.identity_headers.config import IdentityHeadersConfig


class IdentityHeadersPlugin(Plugin[IdentityHeadersConfig]):
    """Sends the authenticated identity upstream as headers; configure it once, globally.

    Runs after authentication (stage ``authz``). Every header it manages (the claim map's and
    the ``X-Consumer-*`` set) is first removed from the upstream request, on every request,
    authenticated or not, so a client can never supply them; they are then set from
    ``ctx.consumer``. Claim values are rendered header-safe (see
    :func:`~portway.plugins._identity.headers.header_value`).
    """

    name = "identity_headers"
    sync_hooks = True
    stage = Stage.authz
    Config: ClassVar[type[PluginConfig]] = IdentityHeadersConfig

    def __init__(self, config: IdentityHeadersConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._map = [(claim, h.lower().encode("ascii")) for claim, h in config.claims.items()]
        self._managed = frozenset(h for _, h in self._map) | STANDARD

    async def on_request(self, ctx: RequestContext) -> Response | None:
        headers = ctx.upstream_request.headers
        if any(k in self._managed for k, _ in headers.raw()):
            headers.remove_many(self._managed)
        c = ctx.consumer
        if c is None:
            return None
        if self.config.consumer_headers:
            set_consumer_headers(headers, c)
        for claim, header in self._map:
            v = header_value(lookup_claim(c.claims, claim))
            if v is not None:
                headers.add_raw(header, v.encode("ascii"))
        return None

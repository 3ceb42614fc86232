"""The ``scopes`` plugin."""

from __future__ import annotations

from typing import ClassVar

from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, PluginEnv, Stage
from portway.plugins._identity.errors import challenge, forbidden, unauthorized
from portway.plugins.scopes.config import ScopesConfig


class ScopesPlugin(Plugin[ScopesConfig]):
    """Requires scopes on ``ctx.consumer.scopes`` (set by ``jwt`` from ``scope``/``scp`` and by
    ``oauth2_introspection`` from ``scope``).

    No authenticated consumer → 401; missing scopes → 403 with RFC 6750
    ``error="insufficient_scope"`` and the required ``scope`` in ``WWW-Authenticate``.
    """

    name = "scopes"
    # reads the consumer's scopes only
    sync_hooks = True
    stage = Stage.authz
    Config: ClassVar[type[PluginConfig]] = ScopesConfig

    def __init__(self, config: ScopesConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._required = frozenset(config.required)
        self._missing = [challenge("Bearer", config.realm)]
        self._insufficient = [
            challenge(
                "Bearer",
                config.realm,
                error="insufficient_scope",
                scope=" ".join(config.required),
            )
        ]

    def satisfied(self, scopes: frozenset[str]) -> bool:
        if self.config.mode == "all":
            return self._required <= scopes
        return bool(self._required & scopes)

    async def on_request(self, ctx: RequestContext) -> Response | None:
        c = ctx.consumer
        if c is None or c.anonymous:
            raise unauthorized(self._missing, self.name, "missing credentials")
        if not self.satisfied(c.scopes):
            raise forbidden(self.name, "insufficient scope", self._insufficient)
        return None

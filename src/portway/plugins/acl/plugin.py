"""The ``acl`` plugin."""

from __future__ import annotations

from typing import ClassVar

from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, PluginEnv, Stage
from portway.plugins._identity.errors import forbidden
from portway.plugins.acl.config import AclConfig


class AclPlugin(Plugin[AclConfig]):
    """Authorizes by consumer group: ``deny`` wins over ``allow``; with ``allow`` set the
    consumer must be in at least one allowed group. No consumer (no authentication ran) or an
    anonymous consumer (unless ``allow_anonymous``) → 403; the body never lists groups."""

    name = "acl"
    sync_hooks = True
    stage = Stage.authz
    Config: ClassVar[type[PluginConfig]] = AclConfig

    def __init__(self, config: AclConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._allow = frozenset(config.allow)
        self._deny = frozenset(config.deny)

    def allowed(self, groups: frozenset[str]) -> bool:
        if self._deny & groups:
            return False
        return not self._allow or bool(self._allow & groups)

    async def on_request(self, ctx: RequestContext) -> Response | None:
        c = ctx.consumer
        if c is None or (c.anonymous and not self.config.allow_anonymous):
            raise forbidden(self.name)
        if not self.allowed(c.groups):
            raise forbidden(self.name)
        return None

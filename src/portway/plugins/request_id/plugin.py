"""``request_id``: accept or generate ``X-Request-ID``, forward it, echo it on the response."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, Stage
from portway.plugins.request_id.hooks import RequestIdHooks


class RequestIdConfig(PluginConfig):
    header: str = Field("x-request-id", description="header carrying the id")
    trust_incoming: bool = Field(True, description="keep a well-formed id sent by the client")
    echo: bool = Field(True, description="add the id to the response")


class RequestIdPlugin(Plugin[RequestIdConfig]):
    """Sets ``ctx.request_id`` (used in error bodies and logs)."""

    name = "request_id"
    sync_hooks = True
    stage = Stage.edge
    Config = RequestIdConfig
    # the hooks copy the request when they edit it (``RequestIdHooks.request``); a subclass
    # may edit it in place: it gets the copy before the hooks
    copies_on_edit: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.copies_on_edit = False

    def __init__(self, config: RequestIdConfig, env: object) -> None:
        super().__init__(config, env)  # type: ignore[arg-type]
        self._h = config.header.lower().encode()
        self._hooks = RequestIdHooks(self._h, config.trust_incoming, config.echo)
        # the compiled plain-call hooks (pipeline/runner.py); a subclass keeps the coroutines
        self.fast_hooks = self._hooks if type(self) is RequestIdPlugin else None

    async def on_request(self, ctx: RequestContext) -> Response | None:
        return self._hooks.request(ctx)

    async def on_response(self, ctx: RequestContext) -> None:
        self._hooks.response(ctx)

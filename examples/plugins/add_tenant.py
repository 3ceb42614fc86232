"""Example third-party plugin: derive a tenant from the host and forward it upstream.

Load it from its file — the name ``add_tenant`` is found as ``add_tenant.py`` in a directory
of ``plugin_paths`` (relative to the config file)::

    plugin_paths: [examples/plugins]
    routes:
      - name: api
        ...
        plugins: [{name: add_tenant, config: {allowed: [acme, globex]}}]

or name its class in the binding (``module: add_tenant:AddTenantPlugin``), or install it as a
package with an entry point in the ``portway.plugins`` group::

    [project.entry-points."portway.plugins"]
    add_tenant = "add_tenant:AddTenantPlugin"

Its test, with the testing kit (``portway.testing``), is in ``docs/plugins.md``.
"""

from __future__ import annotations

from pydantic import Field

from portway.errors import ForbiddenError
from portway.http.models import Response
from portway.pipeline.context import ContextKey, RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, Stage

TENANT = ContextKey[str]("add_tenant.tenant")


class AddTenantConfig(PluginConfig):
    header: str = Field("x-tenant", description="header sent upstream")
    allowed: list[str] = Field(default_factory=list, description="empty: any tenant")


class AddTenantPlugin(Plugin[AddTenantConfig]):
    """``acme.api.example.com`` → ``X-Tenant: acme``; unknown tenants get 403."""

    name = "add_tenant"
    stage = Stage.authz
    Config = AddTenantConfig
    sync_hooks = True  # the hooks never wait: routes keep the task-free path

    async def on_request(self, ctx: RequestContext) -> Response | None:
        tenant = ctx.request.host.split(".", 1)[0]
        if self.config.allowed and tenant not in self.config.allowed:
            raise ForbiddenError("unknown tenant")
        ctx.state[TENANT] = tenant  # per-request state lives in ctx, never on the plugin
        ctx.upstream_request.headers.set(self.config.header, tenant)
        return None

    async def on_response(self, ctx: RequestContext) -> None:
        tenant = ctx.state.get(TENANT)
        if ctx.response is not None and tenant:
            ctx.response.headers.set("x-served-tenant", tenant)

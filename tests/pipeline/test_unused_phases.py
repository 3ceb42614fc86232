"""A plugin instance may leave out a phase its class implements (``Plugin.unused_phases``)."""

from __future__ import annotations

from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import EmptyConfig, Plugin, PluginEnv, implements
from portway.pipeline.registry import registry
from portway.pipeline.runner import Chain


class _Both(Plugin[EmptyConfig]):
    name = "both"

    async def on_response(self, ctx: RequestContext) -> None:
        return None


def test_instance_opts_out_of_a_phase() -> None:
    on = _Both(EmptyConfig(), PluginEnv())
    off = _Both(EmptyConfig(), PluginEnv())
    off.unused_phases = frozenset({"on_response"})
    assert implements(on, "on_response") and not implements(off, "on_response")
    chain = Chain([on, off])
    assert chain.on_response == (on,)


def test_auth_combinator_has_on_response_only_with_a_member_needing_it() -> None:
    cls = registry.get("auth")
    plain = cls(cls.Config.model_validate({"any": ["key_auth", "jwt"]}), PluginEnv())
    assert not implements(plain, "on_response")
    oidc = {
        "name": "oidc",
        "config": {
            "issuer": "https://idp.example.com",
            "client_id": "portal",
            "client_secret": "s",
            "session": {"secret": "x" * 32},
        },
    }
    with_oidc = cls(cls.Config.model_validate({"any": [oidc, "key_auth"]}), PluginEnv())
    assert implements(with_oidc, "on_response")
    assert not with_oidc.sync_hooks

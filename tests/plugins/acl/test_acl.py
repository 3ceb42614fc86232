"""acl: allow/deny by consumer group."""

from __future__ import annotations

from typing import Any

import pytest

from portway.pipeline.context import Consumer
from portway.plugins.acl.config import AclConfig
from portway.plugins.acl.plugin import AclPlugin
from tests.identity_testing import make_context, make_env
from tests.plugins._identity.kit import refused


def plugin(**cfg: Any) -> AclPlugin:
    return AclPlugin(AclConfig.model_validate(cfg), make_env())


def ctx_as(*groups: str, anonymous: bool = False) -> Any:
    ctx = make_context()
    ctx.consumer = Consumer(id="1", username="u", groups=frozenset(groups), anonymous=anonymous)
    return ctx


@pytest.mark.parametrize(
    ("cfg", "groups", "ok"),
    [
        ({"allow": ["admin"]}, ["admin"], True),
        ({"allow": ["admin", "ops"]}, ["ops", "x"], True),
        ({"allow": ["admin"]}, ["user"], False),
        ({"allow": ["admin"]}, [], False),
        ({"deny": ["banned"]}, ["user"], True),
        ({"deny": ["banned"]}, ["user", "banned"], False),
        ({"allow": ["admin"], "deny": ["banned"]}, ["admin", "banned"], False),
    ],
)
async def test_decisions(cfg: dict[str, Any], groups: list[str], ok: bool) -> None:
    p = plugin(**cfg)
    if ok:
        assert await p.on_request(ctx_as(*groups)) is None
    else:
        e = await refused(p, ctx_as(*groups))
        assert e.status == 403 and "admin" not in e.message


async def test_no_consumer_and_anonymous() -> None:
    assert (await refused(plugin(deny=["x"]), make_context())).status == 403
    assert (await refused(plugin(deny=["x"]), ctx_as(anonymous=True))).status == 403
    assert await plugin(deny=["x"], allow_anonymous=True).on_request(ctx_as(anonymous=True)) is None


def test_config_needs_a_rule() -> None:
    with pytest.raises(ValueError):
        AclConfig()

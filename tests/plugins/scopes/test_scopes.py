"""scopes: any/all requirements over consumer scopes."""

from __future__ import annotations

from typing import Any

import pytest

from portway.pipeline.context import Consumer
from portway.plugins.scopes.config import ScopesConfig
from portway.plugins.scopes.plugin import ScopesPlugin
from tests.identity_testing import make_context, make_env
from tests.plugins._identity.kit import refused, www_authenticate


def plugin(**cfg: Any) -> ScopesPlugin:
    return ScopesPlugin(ScopesConfig.model_validate(cfg), make_env())


def ctx_with(*scopes: str) -> Any:
    ctx = make_context()
    ctx.consumer = Consumer(id="1", username="u", scopes=frozenset(scopes))
    return ctx


@pytest.mark.parametrize(
    ("mode", "have", "ok"),
    [
        ("all", ["read", "write"], True),
        ("all", ["read", "write", "x"], True),
        ("all", ["read"], False),
        ("any", ["read"], True),
        ("any", ["x"], False),
        ("any", [], False),
    ],
)
async def test_decisions(mode: str, have: list[str], ok: bool) -> None:
    p = plugin(required=["read", "write"], mode=mode)
    if ok:
        assert await p.on_request(ctx_with(*have)) is None
    else:
        e = await refused(p, ctx_with(*have))
        assert e.status == 403 and e.message == "insufficient scope"
        assert www_authenticate(e) == [
            'Bearer realm="portway", error="insufficient_scope", scope="read write"'
        ]


async def test_unauthenticated_is_401() -> None:
    e = await refused(plugin(required=["read"]), make_context())
    assert e.status == 401 and www_authenticate(e) == ['Bearer realm="portway"']


def test_config() -> None:
    with pytest.raises(ValueError):
        ScopesConfig.model_validate({"required": []})

"""identity_headers: claim map, spoof removal on every request, safe values."""

from __future__ import annotations

from typing import Any

import pytest

from portway.pipeline.context import Consumer
from portway.plugins.identity_headers.config import IdentityHeadersConfig
from portway.plugins.identity_headers.plugin import IdentityHeadersPlugin
from tests.identity_testing import make_context, make_env

CFG = {"claims": {"sub": "X-User-ID", "role": "X-User-Role", "org.id": "X-Org"}}
SPOOF = [
    ("x-user-id", "admin"),
    ("X-User-Role", "root"),
    ("x-consumer-id", "1"),
    ("x-org", "evil"),
    ("keep", "me"),
]


def plugin(**cfg: Any) -> IdentityHeadersPlugin:
    return IdentityHeadersPlugin(IdentityHeadersConfig.model_validate({**CFG, **cfg}), make_env())


async def test_spoofed_headers_removed_without_consumer() -> None:
    ctx = make_context(headers=SPOOF)
    await plugin().on_request(ctx)
    assert list(ctx.upstream_request.headers) == [("keep", "me")]


async def test_claims_mapped_from_consumer() -> None:
    ctx = make_context(headers=SPOOF)
    ctx.consumer = Consumer(
        id="c1",
        username="alice",
        groups=frozenset({"g"}),
        claims={"sub": "u-1", "role": ["a", "b"], "org": {"id": 7}},
    )
    await plugin().on_request(ctx)
    h = ctx.upstream_request.headers
    assert h.get_all("x-user-id") == ["u-1"]
    assert h.get_all("x-user-role") == ["a,b"]
    assert h.get_all("x-org") == ["7"]
    assert h.get_all("x-consumer-id") == ["c1"] and h.get("x-consumer-groups") == "g"
    assert h.get("keep") == "me"


async def test_injection_attempts_in_claims_are_encoded() -> None:
    ctx = make_context()
    ctx.consumer = Consumer(id="c", username="u", claims={"sub": "x\r\nX-Admin: 1", "role": None})
    await plugin(consumer_headers=False).on_request(ctx)
    h = ctx.upstream_request.headers
    assert h.get("x-user-id") == "x%0D%0AX-Admin: 1"
    assert "x-user-role" not in h and "x-admin" not in h and "x-consumer-id" not in h


def test_invalid_header_name() -> None:
    with pytest.raises(ValueError):
        IdentityHeadersConfig.model_validate({"claims": {"sub": "Bad Header"}})

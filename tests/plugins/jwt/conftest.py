"""Fixtures for jwt tests: plugins over a directory with HS and asymmetric issuers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from portway.plugins.jwt.config import JwtConfig
from portway.plugins.jwt.plugin import JwtPlugin
from tests.identity_testing import make_env
from tests.plugins._identity.kit import HS_SECRET, ec_key, ed_key, public_pem, rsa_key

CONSUMERS = [
    {
        "username": "alice",
        "groups": ["admin"],
        "credentials": {"jwt": [{"issuer": "alice-app", "secret": HS_SECRET}]},
    },
    {"username": "svc", "id": "svc-id"},
]


def issuers() -> list[dict[str, Any]]:
    return [
        {
            "issuer": "rsa-idp",
            "algorithms": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
            "public_key": public_pem(rsa_key()),
        },
        {"issuer": "ec-idp", "algorithms": ["ES256"], "public_key": public_pem(ec_key("P-256"))},
        {"issuer": "ec384-idp", "algorithms": ["ES384"], "public_key": public_pem(ec_key("P-384"))},
        {"issuer": "ed-idp", "algorithms": ["EdDSA"], "public_key": public_pem(ed_key())},
        {"issuer": "hs-idp", "algorithms": ["HS512"], "secret": "h" * 64},
    ]


@pytest.fixture
def make_plugin() -> Callable[..., JwtPlugin]:
    def build(clock: Callable[[], float] | None = None, **cfg: Any) -> JwtPlugin:
        cfg.setdefault("issuers", issuers())
        kw: dict[str, Any] = {"clock": clock} if clock is not None else {}
        return JwtPlugin(JwtConfig.model_validate(cfg), make_env(CONSUMERS), **kw)

    return build

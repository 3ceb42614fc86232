"""Provider signing keys over real HTTP: rotation picked up on an unknown kid (one fetch shared
by concurrent verifications, rate-limited), and a JWKS outage keeping the last good keys."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from portway.http.models import Request, Response
from portway.plugins.oidc.config import OidcConfig
from portway.plugins.oidc.provider import Provider
from portway.plugins.oidc.tokens import InvalidToken, verify_signature
from tests.helpers import free_port, run_upstream


class FakeProvider:
    """Discovery and a switchable JWKS on a real socket."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.keys: list[RSAKey] = []
        self.jwks_hits = 0
        self.down = False

    async def handle(self, req: Request) -> Response:
        if req.path == "/.well-known/openid-configuration":
            return Response.json(
                200,
                {
                    "issuer": self.base,
                    "authorization_endpoint": self.base + "/auth",
                    "token_endpoint": self.base + "/token",
                    "jwks_uri": self.base + "/jwks",
                },
            )
        if req.path == "/jwks":
            self.jwks_hits += 1
            if self.down:
                return Response.text(503, "down")
            return Response.json(200, {"keys": [k.as_dict(private=False) for k in self.keys]})
        return Response.text(404, "no")


def _token(key: RSAKey, issuer: str) -> str:
    now = int(time.time())
    claims = {"iss": issuer, "sub": "u", "aud": "portal", "iat": now, "exp": now + 60}
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


def _provider(base: str, **over: Any) -> Provider:
    cfg = OidcConfig.model_validate(
        {
            "issuer": base,
            "client_id": "portal",
            "client_secret": "s",
            "session": {"secret": "x" * 32},
            "jwks_min_refresh": "1h",
            **over,
        }
    )
    return Provider(cfg)


async def test_rotation_on_unknown_kid_and_outage_keeps_keys() -> None:
    port = free_port()
    fake = FakeProvider(port)
    k1 = RSAKey.generate_key(2048, private=True, parameters={"kid": "k1"})
    k2 = RSAKey.generate_key(2048, private=True, parameters={"kid": "k2"})
    k3 = RSAKey.generate_key(2048, private=True, parameters={"kid": "k3"})
    fake.keys = [k1]
    async with run_upstream(fake.handle, port=port):
        p = _provider(fake.base)
        await p.start()
        try:
            assert fake.jwks_hits == 1
            _, claims = await verify_signature(p, _token(k1, fake.base), ("RS256",))
            assert claims["sub"] == "u" and fake.jwks_hits == 1
            # the provider rotates to k2: many concurrent tokens with the new kid, one fetch
            fake.keys = [k2, k1]
            tok = _token(k2, fake.base)
            results = await asyncio.gather(
                *(verify_signature(p, tok, ("RS256",)) for _ in range(10))
            )
            assert all(c["sub"] == "u" for _, c in results)
            assert fake.jwks_hits == 2
            # another unknown kid within jwks_min_refresh: no new fetch, refused
            with pytest.raises(InvalidToken):
                await verify_signature(p, _token(k3, fake.base), ("RS256",))
            assert fake.jwks_hits == 2
            # JWKS outage: a scheduled refresh fails, the keys stay
            fake.down = True
            keys = p.keys
            assert keys is not None and await keys.refresh() is False
            assert fake.jwks_hits == 3
            await verify_signature(p, _token(k2, fake.base), ("RS256",))
            # a token signed by a key the provider never published
            with pytest.raises(InvalidToken):
                forged = _token(
                    RSAKey.generate_key(2048, private=True, parameters={"kid": "k1"}), fake.base
                )
                await verify_signature(p, forged, ("RS256",))
            # an algorithm not announced is refused before any key is looked at
            with pytest.raises(InvalidToken, match="alg"):
                await verify_signature(p, _token(k1, fake.base), ("ES256",))
        finally:
            await p.aclose()

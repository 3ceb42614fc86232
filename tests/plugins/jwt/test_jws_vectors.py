"""RFC 7515 / RFC 8037 signature test vectors, through the key layer and the plugin."""

from __future__ import annotations

import pytest

from portway.plugins._identity.jose import b64url_decode, jwk_key
from portway.plugins.jwt.config import JwtConfig
from portway.plugins.jwt.plugin import JwtPlugin
from tests.identity_testing import make_context, make_env
from tests.plugins._identity.kit import refused

PAYLOAD = (
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
)
RFC_NOW = 1300819000.0

# RFC 7515 A.1 (HS256)
A1_KEY = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
A1 = f"eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.{PAYLOAD}.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

# RFC 7515 A.2 (RS256)
A2_JWK = {
    "kty": "RSA",
    "e": "AQAB",
    "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0"
    "Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5r"
    "exMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxX"
    "FvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
}
A2_SIG = (
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5j"
    "ujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L0"
    "7Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUip"
    "UTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
)
A2 = f"eyJhbGciOiJSUzI1NiJ9.{PAYLOAD}.{A2_SIG}"

# RFC 7515 A.3 (ES256)
A3_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
A3 = (
    f"eyJhbGciOiJFUzI1NiJ9.{PAYLOAD}."
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)

# RFC 8037 A.4 (Ed25519; the payload is not JSON, so it is checked at the key layer only)
ED_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
ED_INPUT = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
ED_SIG = "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"


def _split(token: str) -> tuple[bytes, bytes]:
    h, p, s = token.split(".")
    return f"{h}.{p}".encode(), b64url_decode(s)


@pytest.mark.parametrize(("jwk", "alg", "token"), [(A2_JWK, "RS256", A2), (A3_JWK, "ES256", A3)])
def test_rfc7515_asymmetric_vectors(jwk: dict, alg: str, token: str) -> None:
    key = jwk_key(jwk)
    si, sig = _split(token)
    assert key.verify(alg, si, sig)
    assert not key.verify(alg, si + b"x", sig)
    flipped = sig[:-1] + bytes([sig[-1] ^ 1])
    assert not key.verify(alg, si, flipped)


def test_rfc8037_ed25519_vector() -> None:
    key = jwk_key(ED_JWK)
    assert key.algorithms == {"EdDSA"}
    assert key.verify("EdDSA", ED_INPUT.encode(), b64url_decode(ED_SIG))
    assert not key.verify("EdDSA", ED_INPUT.encode() + b".", b64url_decode(ED_SIG))


def _consumer_plugin(cred: dict) -> JwtPlugin:
    env = make_env([{"username": "joe", "credentials": {"jwt": [{"issuer": "joe", **cred}]}}])
    return JwtPlugin(JwtConfig(), env, clock=lambda: RFC_NOW)


async def test_rfc7515_a1_hs256_through_the_plugin() -> None:
    p = _consumer_plugin({"secret": A1_KEY, "secret_base64": True})
    ctx = make_context(headers=[("authorization", f"Bearer {A1}")])
    await p.on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.username == "joe"
    assert ctx.consumer.claims["http://example.com/is_root"] is True


async def test_rfc_vector_expires() -> None:
    env = make_env(
        [
            {
                "username": "joe",
                "credentials": {
                    "jwt": [{"issuer": "joe", "secret": A1_KEY, "secret_base64": True}]
                },
            }
        ]
    )
    p = JwtPlugin(JwtConfig(), env, clock=lambda: 1300819380.0 + 31)
    e = await refused(p, make_context(headers=[("authorization", f"Bearer {A1}")]))
    assert e.status == 401 and e.message == "token expired"


async def test_rfc7515_a3_es256_through_the_plugin_with_a_pem_key() -> None:
    from cryptography.hazmat.primitives import serialization

    key = jwk_key(A3_JWK).key
    pem = key.public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    cfg = JwtConfig.model_validate(
        {"issuers": [{"issuer": "joe", "algorithms": ["ES256"], "public_key": pem}]}
    )
    p = JwtPlugin(cfg, make_env(), clock=lambda: RFC_NOW)
    ctx = make_context(headers=[("authorization", f"Bearer {A3}")])
    await p.on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.username == "joe"  # no sub: the issuer

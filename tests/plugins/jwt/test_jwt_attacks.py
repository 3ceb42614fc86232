"""jwt_tool-style attacks: alg none, null signatures, key confusion, kid injection, psychic
signatures, blank HMAC secrets, embedded keys, crit, oversized and malformed tokens."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from portway.plugins.jwt.plugin import JwtPlugin
from tests.identity_testing import make_context
from tests.plugins._identity.kit import (
    HS_SECRET,
    b64,
    claims,
    ec_key,
    forge,
    mint,
    public_jwk,
    public_pem,
    refused,
    rsa_key,
    seg,
)

Make = Callable[..., JwtPlugin]


async def assert_refused(p: JwtPlugin, token: str) -> None:
    e = await refused(p, make_context(headers=[("authorization", f"Bearer {token}")]))
    assert e.status == 401 and e.message == "invalid token", e


def hs256(header: dict, payload: dict, key: bytes) -> str:
    si = f"{seg(header)}.{seg(payload)}"
    return f"{si}.{b64(hmac.new(key, si.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "", None, "HS256 ", "hs256"])
@pytest.mark.parametrize("sig", [b"", b"\x00", b"sig"])
async def test_alg_none_and_variants(make_plugin: Make, alg: object, sig: bytes) -> None:
    await assert_refused(
        make_plugin(), forge({"alg": alg, "typ": "JWT"}, claims(iss="alice-app"), sig)
    )


async def test_unsigned_token_with_trailing_dot_and_two_parts(make_plugin: Make) -> None:
    p = make_plugin()
    body = f"{seg({'alg': 'HS256'})}.{seg(claims(iss='alice-app'))}"
    for tok in (body + ".", body, body + "..", body + ".x.y.z"):
        await assert_refused(p, tok)


async def test_null_signature_on_valid_token(make_plugin: Make) -> None:
    tok = mint(claims(iss="alice-app"), HS_SECRET, "HS256")
    h, p, _ = tok.split(".")
    for sig in ("", "AA", "A" * 43):
        await assert_refused(make_plugin(), f"{h}.{p}.{sig}")


async def test_tampered_payload_and_signature(make_plugin: Make) -> None:
    tok = mint(claims(iss="rsa-idp", sub="user"), rsa_key(), "RS256")
    h, _, s = tok.split(".")
    await assert_refused(make_plugin(), f"{h}.{seg(claims(iss='rsa-idp', sub='admin'))}.{s}")
    flipped = s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1]
    await assert_refused(make_plugin(), f"{h}.{tok.split('.')[1]}.{flipped}")


async def test_key_confusion_hs256_signed_with_rsa_public_key(make_plugin: Make) -> None:
    # the classic: re-sign as HS256 using the RS256 public key (PEM bytes) as HMAC secret
    pem = public_pem(rsa_key()).encode()
    for key in (pem, pem.strip(), public_pem(rsa_key()).replace("\n", "").encode()):
        await assert_refused(make_plugin(), hs256({"alg": "HS256"}, claims(iss="rsa-idp"), key))
    # also when HS256 is in the plugin's allowed list and the issuer is a JWKS/PEM RSA issuer
    p = make_plugin(algorithms=["HS256", "RS256"])
    await assert_refused(p, hs256({"alg": "HS256"}, claims(iss="rsa-idp"), pem))


async def test_rs_token_never_checked_with_an_hmac_secret(make_plugin: Make) -> None:
    # alice-app is an HS256 credential: an RS256 token claiming it must fail even if valid RSA
    await assert_refused(make_plugin(), mint(claims(iss="alice-app"), rsa_key(), "RS256"))


async def test_hs384_token_against_hs256_credential(make_plugin: Make) -> None:
    await assert_refused(make_plugin(), mint(claims(iss="alice-app"), HS_SECRET, "HS384"))


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../../../dev/null",
        "/dev/null",
        "' UNION SELECT 'secret' --",
        "|cat /etc/passwd",
        "x" * 300,
        "\x00",
        5,
        {"k": 1},
    ],
)
async def test_kid_injection(make_plugin: Make, kid: object) -> None:
    # signed with empty / predictable secrets that path traversal or SQLi would select
    for key in (b"", b"\n", b"secret"):
        await assert_refused(
            make_plugin(), hs256({"alg": "HS256", "kid": kid}, claims(iss="alice-app"), key)
        )


async def test_blank_and_weak_hmac_secrets(make_plugin: Make) -> None:
    for key in (b"", b"secret", b"\x00" * 32, HS_SECRET.encode()[:-1]):
        await assert_refused(make_plugin(), hs256({"alg": "HS256"}, claims(iss="alice-app"), key))


@pytest.mark.parametrize("alg,size", [("ES256", 32), ("ES384", 48)])
async def test_psychic_signature(make_plugin: Make, alg: str, size: int) -> None:
    iss = "ec-idp" if alg == "ES256" else "ec384-idp"
    header = {"alg": alg}
    payload = claims(iss=iss, sub="admin")
    await assert_refused(make_plugin(), forge(header, payload, b"\x00" * (2 * size)))
    # r = s = n (the curve order) is equally degenerate
    n = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
    if alg == "ES256":
        await assert_refused(make_plugin(), forge(header, payload, n.to_bytes(32, "big") * 2))


async def test_der_encoded_ecdsa_signature_refused(make_plugin: Make) -> None:
    from cryptography.hazmat.primitives import hashes

    header, payload = {"alg": "ES256"}, claims(iss="ec-idp")
    si = f"{seg(header)}.{seg(payload)}".encode()
    der = ec_key("P-256").sign(si, ec.ECDSA(hashes.SHA256()))
    await assert_refused(make_plugin(), f"{si.decode()}.{b64(der)}")


@pytest.mark.parametrize("member", ["jwk", "jku", "x5u", "x5c"])
async def test_embedded_or_remote_keys_never_used(make_plugin: Make, member: str) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    value: object = {
        "jwk": public_jwk(attacker),
        "jku": "http://attacker.example/jwks.json",
        "x5u": "http://attacker.example/cert.pem",
        "x5c": ["MIIB"],
    }[member]
    tok = mint(claims(iss="ec-idp"), attacker, "ES256", **{member: value})
    await assert_refused(make_plugin(), tok)
    # and even with the real key's signature, the header itself is refused
    await assert_refused(
        make_plugin(), mint(claims(iss="ec-idp"), ec_key("P-256"), "ES256", **{member: value})
    )


async def test_crit_header_refused(make_plugin: Make) -> None:
    tok = mint(claims(iss="alice-app"), HS_SECRET, "HS256", crit=["exp"], exp=1)
    await assert_refused(make_plugin(), tok)
    await assert_refused(make_plugin(), mint(claims(iss="alice-app"), HS_SECRET, "HS256", crit=[]))
    await assert_refused(
        make_plugin(), mint(claims(iss="alice-app"), HS_SECRET, "HS256", b64=False)
    )


async def test_oversized_token(make_plugin: Make) -> None:
    big = mint(claims(iss="alice-app", pad="x" * 9000), HS_SECRET, "HS256")
    await assert_refused(make_plugin(), big)
    await refused(make_plugin(max_token_bytes=100_000), make_context())  # missing, not crash
    p = make_plugin(max_token_bytes=100_000)
    ctx = make_context(headers=[("authorization", f"Bearer {big}")])
    await p.on_request(ctx)
    assert ctx.consumer is not None


@pytest.mark.parametrize(
    "token",
    [
        "a.b.c",
        "....",
        "eyJhbGciOiJIUzI1NiJ9.e30=.AAAA",
        f"{b64(b'[1]')}.{seg({})}.AAAA",
        f"{b64(b'not json')}.{seg({})}.AAAA",
        f"{seg({'alg': 'HS256'})}.{b64(b'[]')}.AAAA",
        f"{seg({'alg': 'HS256'})}.{b64(b'nope')}.AAAA",
        f"{seg({'alg': 'HS256', 'typ': 'JWE'})}.{seg(claims(iss='alice-app'))}.AAAA",
        f"{seg({'alg': 'HS256', 'cty': 'JWT'})}.{seg(claims(iss='alice-app'))}.AAAA",
        f"{seg({'alg': 'HS256', 'zip': 'DEF'})}.{seg(claims(iss='alice-app'))}.AAAA",
        f"{seg({'alg': 'RSA-OAEP', 'enc': 'A256GCM'})}.a.b.c.d",
        b64(bytes([0xFF, 0xFE])) + "." + seg({}) + ".AAAA",
    ],
)
async def test_malformed_tokens(make_plugin: Make, token: str) -> None:
    await assert_refused(make_plugin(), token)


async def test_numbers_out_of_range(make_plugin: Make) -> None:
    raw = b'{"iss":"alice-app","exp":1e999}'
    si = seg({"alg": "HS256"}) + "." + b64(raw)
    tok = f"{si}.{b64(hmac.new(HS_SECRET.encode(), si.encode(), hashlib.sha256).digest())}"
    await assert_refused(make_plugin(), tok)
    # a huge integer parses as a float: still a number, still compared, never a crash
    tok2 = hs256({"alg": "HS256"}, {"iss": "alice-app", "exp": -(2**40)}, HS_SECRET.encode())
    e = await refused(make_plugin(), make_context(headers=[("authorization", f"Bearer {tok2}")]))
    assert e.message == "token expired"

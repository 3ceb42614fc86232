"""Shared fixtures-as-functions for the identity plugin tests: keys, tokens, certificates."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import time
from typing import Any

import jwt as pyjwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from portway.errors import GatewayError
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin

HS_SECRET = "s3cr3t-for-tests-0123456789abcdef-xyz-padding-to-64-bytes-long!!"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def seg(obj: Any) -> str:
    return b64(orjson.dumps(obj))


@functools.cache
def rsa_key(n: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(curve: str = "P-256") -> ec.EllipticCurvePrivateKey:
    c: ec.EllipticCurve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[curve]
    return ec.generate_private_key(c)


@functools.cache
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def public_jwk(key: Any, kid: str | None = None, alg: str | None = None) -> dict[str, Any]:
    pub = key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        jwk: dict[str, Any] = orjson.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(pub))
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        jwk = orjson.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(pub))
    else:
        jwk = orjson.loads(pyjwt.algorithms.OKPAlgorithm.to_jwk(pub))
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    return jwk


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"iss": "idp", "sub": "user-1", "iat": now, "exp": now + 300}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def mint(payload: dict[str, Any], key: Any, alg: str, **headers: Any) -> str:
    return pyjwt.encode(payload, key, algorithm=alg, headers=headers or None)


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token with arbitrary header and signature (for attacks)."""
    return f"{seg(header)}.{seg(payload)}.{b64(signature)}"


async def refused(plugin: Plugin[Any], ctx: RequestContext) -> GatewayError:
    """Run ``on_request`` and return the error it raised (fails if it did not raise)."""
    try:
        await plugin.on_request(ctx)
    except GatewayError as e:
        return e
    raise AssertionError(f"request was accepted as {ctx.consumer!r}")


def www_authenticate(e: GatewayError) -> list[str]:
    return [v for k, v in e.headers if k == "www-authenticate"]


# --- certificates -------------------------------------------------------------------------


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def make_cert(
    cn: str,
    issuer_key: Any,
    issuer_name: x509.Name | None,
    *,
    org: str | None = None,
    sans: list[x509.GeneralName] | None = None,
    ca: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(cn, org)
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(issuer_key or key, hashes.SHA256())
    return cert, key


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_private(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )

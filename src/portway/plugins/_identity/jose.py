"""JWS verification keys (RFC 7515/7518/8037) with strict algorithm binding.

A :class:`JwsKey` verifies only the algorithms it was declared for: an HMAC secret never checks
an RS/PS/ES/EdDSA token, and an asymmetric public key is a key *object*, never bytes, so it
cannot be turned into an HMAC secret (the classic RS256→HS256 key-confusion attack). Keys are
parsed once at build time; verification is a single ``cryptography`` call.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

HMAC_ALGS = ("HS256", "HS384", "HS512")
RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGS = ("ES256", "ES384", "ES512")
OKP_ALGS = ("EdDSA",)
ALL_ALGS: tuple[str, ...] = HMAC_ALGS + RSA_ALGS + EC_ALGS + OKP_ALGS

_HASHLIB = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
#: ES algorithm → (curve name, coordinate size in bytes)
_EC_CURVES = {"ES256": ("secp256r1", 32), "ES384": ("secp384r1", 48), "ES512": ("secp521r1", 66)}
_JWK_CURVES: dict[str, tuple[ec.EllipticCurve, str]] = {
    "P-256": (ec.SECP256R1(), "ES256"),
    "P-384": (ec.SECP384R1(), "ES384"),
    "P-521": (ec.SECP521R1(), "ES512"),
}
MIN_RSA_BITS = 2048


class JoseKeyError(ValueError):
    """A key that cannot be used (wrong type for its algorithm, too short, malformed)."""


_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_TO_STD = bytes.maketrans(b"-_", b"+/")


def b64url_decode(data: str | bytes) -> bytes:
    """Strict base64url without padding (RFC 7515 §2); ``ValueError`` on anything else,
    including non-canonical spellings (unused trailing bits set), so one token has one form."""
    s = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    rem = len(s) % 4
    if rem == 1 or not _B64URL.fullmatch(s):
        raise ValueError("invalid base64url")
    if rem:
        last = _B64URL_ALPHABET.index(s[-1])
        if last & (0x0F if rem == 2 else 0x03):
            raise ValueError("non-canonical base64url")
    try:
        return binascii.a2b_base64(s.encode("ascii").translate(_TO_STD) + b"=" * (-len(s) % 4))
    except binascii.Error as e:
        raise ValueError("invalid base64url") from e


@dataclass(frozen=True, slots=True)
class JwsKey:
    """One verification key, usable only with ``algorithms`` (exact ``alg`` values)."""

    algorithms: frozenset[str]
    key: bytes | PublicKey
    kid: str | None = None

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is a valid ``alg`` signature of ``signing_input``."""
        if alg not in self.algorithms or not signature:
            return False
        bits = alg[-3:]
        key = self.key
        try:
            if alg in HMAC_ALGS:
                if not isinstance(key, bytes):
                    return False
                mac = hmac.new(key, signing_input, _HASHLIB[bits]).digest()
                return hmac.compare_digest(mac, signature)
            if alg in RSA_ALGS:
                if not isinstance(key, rsa.RSAPublicKey):
                    return False
                if len(signature) != (key.key_size + 7) // 8:
                    return False
                h = _HASHES[bits]()
                pad: padding.AsymmetricPadding = (
                    padding.PKCS1v15()
                    if alg[0] == "R"
                    else padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
                )
                key.verify(signature, signing_input, pad, h)
                return True
            if alg in EC_ALGS:
                if not isinstance(key, ec.EllipticCurvePublicKey):
                    return False
                curve, size = _EC_CURVES[alg]
                if key.curve.name != curve or len(signature) != 2 * size:
                    return False
                r = int.from_bytes(signature[:size], "big")
                s = int.from_bytes(signature[size:], "big")
                # r = s = 0 ("psychic signatures", CVE-2022-21449) and other degenerate values
                # are refused before the library sees them
                if r == 0 or s == 0:
                    return False
                key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(_HASHES[bits]()))
                return True
            if alg == "EdDSA":
                if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
                    return False
                key.verify(signature, signing_input)
                return True
        except (InvalidSignature, ValueError, UnsupportedAlgorithm):
            return False
        return False


def _check_public(key: Any, algorithm: str) -> PublicKey:
    if algorithm in RSA_ALGS:
        if not isinstance(key, rsa.RSAPublicKey):
            raise JoseKeyError(f"{algorithm} needs an RSA public key")
        if key.key_size < MIN_RSA_BITS:
            raise JoseKeyError(f"RSA keys must have at least {MIN_RSA_BITS} bits (RFC 7518 §3.3)")
        return key
    if algorithm in EC_ALGS:
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise JoseKeyError(f"{algorithm} needs an EC public key")
        if key.curve.name != _EC_CURVES[algorithm][0]:
            raise JoseKeyError(f"{algorithm} needs a key on curve {_EC_CURVES[algorithm][0]}")
        return key
    if algorithm == "EdDSA":
        if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            raise JoseKeyError("EdDSA needs an Ed25519 or Ed448 public key")
        return key
    raise JoseKeyError(f"unsupported algorithm {algorithm!r}; use one of {', '.join(ALL_ALGS)}")


def hmac_key(secret: bytes, algorithm: str, kid: str | None = None) -> JwsKey:
    """An HMAC key; RFC 7518 §3.2 requires at least as many bytes as the hash output."""
    if algorithm not in HMAC_ALGS:
        raise JoseKeyError(f"a secret can only be used with {', '.join(HMAC_ALGS)}")
    need = int(algorithm[2:]) // 8
    if len(secret) < need:
        raise JoseKeyError(f"{algorithm} secrets must be at least {need} bytes (RFC 7518 §3.2)")
    return JwsKey(frozenset({algorithm}), secret, kid)


def pem_key(pem: str, algorithm: str, kid: str | None = None) -> JwsKey:
    """A public key from a PEM public key or certificate, bound to ``algorithm``."""
    data = pem.strip().encode("ascii", "replace")
    if b"PRIVATE KEY" in data:
        raise JoseKeyError("configure the public key, not the private key")
    try:
        if b"BEGIN CERTIFICATE" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise JoseKeyError(f"public_key is not a valid PEM public key or certificate: {e}") from e
    return JwsKey(frozenset({algorithm}), _check_public(key, algorithm), kid)


def _b64_int(v: Any) -> int:
    if not isinstance(v, str):
        raise JoseKeyError("JWK member must be a base64url string")
    return int.from_bytes(b64url_decode(v), "big")


def jwk_key(jwk: Mapping[str, Any], allowed: frozenset[str] | None = None) -> JwsKey:
    """A verification key from a public JWK (RFC 7517); symmetric (``oct``) keys are refused,
    and so are keys whose ``use`` is not ``sig`` or whose ``key_ops`` lack ``verify``.

    The key verifies only its own ``alg`` when the JWK names one, otherwise every algorithm
    its type supports (intersected with ``allowed``).
    """
    kty = jwk.get("kty")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise JoseKeyError("kid must be a string")
    if jwk.get("use") not in (None, "sig"):
        raise JoseKeyError("not a signature key")
    ops = jwk.get("key_ops")
    # RFC 7517 §4.3: a key whose key_ops are given may be used only for those operations;
    # verifying a JWS signature is "verify" (a malformed member is a key not to trust)
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise JoseKeyError("key_ops does not allow verify")
    alg = jwk.get("alg")
    if any(k in jwk for k in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise JoseKeyError("private or symmetric key material in a JWKS")
    try:
        key: PublicKey
        if kty == "RSA":
            key = rsa.RSAPublicNumbers(_b64_int(jwk.get("e")), _b64_int(jwk.get("n"))).public_key()
            family: tuple[str, ...] = RSA_ALGS
        elif kty == "EC":
            crv = _JWK_CURVES.get(str(jwk.get("crv")))
            if crv is None:
                raise JoseKeyError(f"unsupported EC curve {jwk.get('crv')!r}")
            key = ec.EllipticCurvePublicNumbers(
                _b64_int(jwk.get("x")), _b64_int(jwk.get("y")), crv[0]
            ).public_key()
            family = (crv[1],)
        elif kty == "OKP":
            raw = b64url_decode(str(jwk.get("x", "")))
            if jwk.get("crv") == "Ed25519":
                key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            elif jwk.get("crv") == "Ed448":
                key = ed448.Ed448PublicKey.from_public_bytes(raw)
            else:
                raise JoseKeyError(f"unsupported OKP curve {jwk.get('crv')!r}")
            family = OKP_ALGS
        else:
            raise JoseKeyError(f"unsupported key type {kty!r}")
    except (ValueError, UnsupportedAlgorithm) as e:
        raise JoseKeyError(f"invalid JWK: {e}") from e
    if alg is not None:
        if not isinstance(alg, str) or alg not in family:
            raise JoseKeyError(f"JWK alg {alg!r} does not match key type {kty}")
        algs = frozenset({alg})
    else:
        algs = frozenset(family)
    if allowed is not None:
        algs &= allowed
    _check_public(key, next(iter(algs)) if algs else family[0])
    return JwsKey(algs, key, kid)

"""Parsing and validating compact JWS tokens (RFC 7515 §7.1, RFC 7519, RFC 8725).

:func:`parse` splits and decodes a token and applies every header rule that does not need a
key; :func:`check_claims` applies the time, issuer and audience rules after the signature was
verified. Both raise :class:`TokenError`, whose message is safe to show a client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from portway.plugins._identity.errors import EXPIRED_TOKEN, INVALID_TOKEN
from portway.plugins._identity.jose import b64url_decode

#: header parameters that would make the token choose its own key or change how it is
#: processed; a gateway must never honour them (RFC 8725 §3.10, §2.8)
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "b64", "zip", "enc", "crit"})
ACCEPTED_TYP = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
MAX_KID = 256


class TokenError(Exception):
    """The token is refused; ``str(e)`` is the client-facing message."""

    def __init__(self, message: str = INVALID_TOKEN, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        #: why, for logs and tests only; never sent to clients
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ParsedToken:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes
    alg: str
    kid: str | None


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(b64url_decode(segment))
    except (ValueError, orjson.JSONDecodeError) as e:
        raise TokenError(detail=f"{what} is not base64url JSON") from e
    if not isinstance(value, dict):
        raise TokenError(detail=f"{what} is not a JSON object")
    return value


def parse(token: str, *, max_bytes: int, algorithms: frozenset[str]) -> ParsedToken:
    """Decode ``token`` and check its header; the signature is not verified here."""
    if len(token) > max_bytes:
        raise TokenError(detail="token too large")
    parts = token.split(".")
    if len(parts) != 3:
        # five parts would be a JWE; anything else is not a compact JWS
        raise TokenError(detail="not a compact JWS")
    h64, p64, s64 = parts
    if not s64:
        raise TokenError(detail="unsigned token")
    header = _json_object(h64, "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        # exact, case-sensitive match: "none", "None", "nOnE", "" are never in the set
        raise TokenError(detail=f"alg {alg!r} not accepted")
    bad = FORBIDDEN_HEADERS.intersection(header)
    if bad:
        raise TokenError(detail=f"forbidden header parameter(s) {sorted(bad)}")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYP):
        raise TokenError(detail=f"typ {typ!r} not accepted")
    cty = header.get("cty")
    if cty is not None and (not isinstance(cty, str) or cty.lower() in ("jwt", "application/jwt")):
        raise TokenError(detail="nested tokens are not accepted")
    kid = header.get("kid")
    if kid is not None and (
        not isinstance(kid, str)
        or not 0 < len(kid) <= MAX_KID
        or not (kid.isascii() and kid.isprintable())
    ):
        raise TokenError(detail="malformed kid")
    try:
        signature = b64url_decode(s64)
    except ValueError as e:
        raise TokenError(detail="signature is not base64url") from e
    claims = _json_object(p64, "payload")
    return ParsedToken(
        header=header,
        claims=claims,
        signing_input=f"{h64}.{p64}".encode("ascii"),
        signature=signature,
        alg=alg,
        kid=kid,
    )


def _number(claims: dict[str, Any], name: str) -> float | None:
    v = claims.get(name)
    if v is None:
        if name in claims:
            raise TokenError(detail=f"{name} is null")
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TokenError(detail=f"{name} is not a NumericDate")
    return float(v)


def check_claims(
    claims: dict[str, Any],
    *,
    now: float,
    leeway: float,
    required: list[str],
    audiences: list[str],
    max_age: float | None = None,
) -> None:
    """Validate registered claims of a signature-verified token."""
    for name in required:
        if name not in claims:
            raise TokenError(detail=f"missing required claim {name!r}")
    exp = _number(claims, "exp")
    nbf = _number(claims, "nbf")
    iat = _number(claims, "iat")
    if exp is not None and now >= exp + leeway:
        raise TokenError(EXPIRED_TOKEN, detail="expired")
    if nbf is not None and now + leeway < nbf:
        raise TokenError(detail="not yet valid")
    if iat is not None:
        if now + leeway < iat:
            raise TokenError(detail="issued in the future")
        if max_age is not None and now - iat > max_age + leeway:
            raise TokenError(EXPIRED_TOKEN, detail="too old (max_age)")
    elif max_age is not None:
        raise TokenError(detail="iat required by max_age")
    for name in ("iss", "sub", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise TokenError(detail=f"{name} is not a string")
    if "aud" in claims:
        aud = claims["aud"]
        auds = [aud] if isinstance(aud, str) else aud
        if not isinstance(auds, list) or not all(isinstance(a, str) for a in auds):
            raise TokenError(detail="aud is not a string or list of strings")
    else:
        auds = []
    if audiences and not set(audiences).intersection(auds):
        raise TokenError(detail="audience not accepted")


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    """Scopes from ``scope`` (space-separated, RFC 8693/9068) or ``scp`` (string or list)."""
    out: set[str] = set()
    for name in ("scope", "scp"):
        v = claims.get(name)
        if isinstance(v, str):
            out.update(v.split())
        elif isinstance(v, list):
            out.update(x for x in v if isinstance(x, str) and x)
    return frozenset(out)

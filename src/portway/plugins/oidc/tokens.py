"""Validating the provider's ID tokens and JWT access tokens with ``joserfc``.

ID tokens (OpenID Connect Core §3.1.3.7): signature by one of the provider's JWKS keys with
an algorithm the provider announced (asymmetric only), ``iss`` exactly the issuer, ``aud``
containing the client id (and ``azp`` equal to it when present or when there are several
audiences), ``exp`` in the future and ``iat`` not in the future (with leeway), ``sub``
present, ``nonce`` equal to the one this login sent.

Access tokens (``bearer: true``; RFC 9068 profile): same signature rules, ``iss`` the issuer,
``exp`` required, ``aud`` containing an accepted audience, ``typ`` ``at+jwt`` or a plain JWT
type, and no ``nonce`` (an ID token is not an access token).
"""

from __future__ import annotations

from typing import Any

from joserfc import jws, jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import Key, KeySet
from joserfc.jwt import JWTClaimsRegistry

from portway.plugins.oidc.provider import Provider

_ACCESS_TYP = frozenset({"at+jwt", "application/at+jwt", "jwt", "application/jwt"})


class InvalidToken(Exception):
    """A token failed validation; ``detail`` is for logs and tests, never for clients."""

    def __init__(self, detail: str, *, expired: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.expired = expired


async def verify_signature(
    provider: Provider, token: str, algorithms: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(header, claims)`` of a JWS whose signature one of the provider's keys verifies.

    May raise the provider's errors when its keys cannot be fetched at all."""
    try:
        header: Any = jws.extract_compact(token.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError) as e:
        raise InvalidToken(f"not a compact JWS: {e}") from None
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("malformed kid")
    if header.get("alg") not in algorithms:
        raise InvalidToken(f"alg {header.get('alg')!r} not accepted")
    keys: list[Key] = await provider.keys_for(kid)
    if not keys:
        raise InvalidToken(f"no provider key for kid {kid!r}")
    # without a kid, each key is tried on its own (joserfc's KeySet needs a kid to choose)
    candidates = [KeySet(keys)] if kid is not None else [KeySet([k]) for k in keys]
    last: Exception | None = None
    for ks in candidates:
        try:
            tok = jwt.decode(token, ks, algorithms=list(algorithms))
        except (JoseError, ValueError) as e:
            last = e
            continue
        claims: Any = tok.claims
        if not isinstance(claims, dict):
            raise InvalidToken("claims are not a JSON object")
        return dict(tok.header), claims
    raise InvalidToken(f"bad signature: {last}")


def _registry(now: float, leeway: float, **claims: Any) -> JWTClaimsRegistry:
    return JWTClaimsRegistry(now=int(now), leeway=int(leeway), **claims)


def _validate(registry: JWTClaimsRegistry, claims: dict[str, Any]) -> None:
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise InvalidToken(f"expired (exp {claims.get('exp')})", expired=True) from None
    except JoseError as e:
        raise InvalidToken(str(e)) from None


def check_id_token(
    claims: dict[str, Any],
    *,
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: float,
    leeway: float,
) -> None:
    """Validate an ID token's claims (signature already verified)."""
    opts: dict[str, Any] = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": client_id},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }
    if nonce is not None:
        opts["nonce"] = {"essential": True, "value": nonce}
    _validate(_registry(now, leeway, **opts), claims)
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidToken("sub is not a non-empty string")
    aud = claims["aud"]
    azp = claims.get("azp")
    several = isinstance(aud, list) and len(aud) > 1
    if (several or azp is not None) and azp != client_id:
        raise InvalidToken("azp is not this client")


def check_access_token(
    header: dict[str, Any],
    claims: dict[str, Any],
    *,
    issuer: str,
    audiences: list[str],
    now: float,
    leeway: float,
) -> None:
    """Validate a JWT access token's header and claims (signature already verified)."""
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCESS_TYP):
        raise InvalidToken(f"typ {typ!r} is not an access token")
    if "nonce" in claims:
        raise InvalidToken("an ID token is not an access token")
    _validate(
        _registry(
            now,
            leeway,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "values": audiences},
            exp={"essential": True},
        ),
        claims,
    )

"""Finding credentials in a request: bearer tokens, query parameters and cookies.

Extraction is strict (RFC 6750 §2): one token per request. A request carrying two different
tokens (two ``Authorization`` fields, or a header and a query parameter that disagree) is
rejected rather than letting one plugin read one and another plugin read the other.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from pydantic import BaseModel, Field

from portway.http.headers import Headers
from portway.http.models import Request

#: RFC 6750 b64token
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


class AmbiguousCredentialsError(ValueError):
    """More than one distinct credential was presented."""


class BearerSourceConfig(BaseModel):
    """Where a bearer token may be read from (mixed into plugin configs)."""

    header: str | None = Field(
        "authorization",
        description="header carrying the token; for Authorization the Bearer scheme is required",
    )
    cookie: str | None = Field(None, description="cookie carrying the token")
    query_param: str | None = Field(None, description="query parameter carrying the token")


def query_values(query: bytes, name: str) -> list[str]:
    """Percent-decoded values of ``name`` in a raw query string."""
    want = name.encode("utf-8")
    out: list[str] = []
    for part in query.split(b"&"):
        k, _, v = part.partition(b"=")
        if unquote_to_bytes(k.replace(b"+", b" ")) == want:
            out.append(unquote_to_bytes(v.replace(b"+", b" ")).decode("utf-8", "replace"))
    return out


def remove_query_params(query: bytes, names: set[str]) -> bytes:
    """``query`` without the parameters in ``names``, other bytes left exactly as they were."""
    want = {n.encode("utf-8") for n in names}
    kept = [
        part
        for part in query.split(b"&")
        if unquote_to_bytes(part.partition(b"=")[0].replace(b"+", b" ")) not in want
    ]
    return b"&".join(p for p in kept if p)


def cookie_values(headers: Headers, name: str) -> list[str]:
    out: list[str] = []
    for raw in headers.get_all("cookie"):
        for pair in raw.split(";"):
            k, sep, v = pair.strip().partition("=")
            if sep and k == name:
                v = v.strip()
                if len(v) >= 2 and v[0] == v[-1] == '"':
                    v = v[1:-1]
                out.append(v)
    return out


def remove_cookie(headers: Headers, name: str) -> None:
    values = headers.get_all("cookie")
    if not values:
        return
    kept: list[str] = []
    for raw in values:
        for pair in raw.split(";"):
            pair = pair.strip()
            if pair and pair.partition("=")[0] != name:
                kept.append(pair)
    headers.remove("cookie")
    if kept:
        headers.add("cookie", "; ".join(kept))


def _single(values: list[str]) -> str | None:
    distinct = set(values)
    if len(distinct) > 1:
        raise AmbiguousCredentialsError("more than one credential presented")
    return values[0] if values else None


def scheme_credentials(headers: Headers, scheme: str, header: str = "authorization") -> str | None:
    """The credentials of ``header`` when it uses ``scheme`` (case-insensitive), else ``None``.

    ``AmbiguousCredentialsError`` when several fields use the scheme with different values.
    """
    found: list[str] = []
    want = scheme.lower()
    for raw in headers.get_all(header):
        s, _, rest = raw.strip().partition(" ")
        if s.lower() == want:
            found.append(rest.strip())
    return _single(found)


def bearer_token(request: Request, cfg: BearerSourceConfig) -> str | None:
    """The one bearer token in ``request`` from the configured sources, or ``None``.

    Raises ``AmbiguousCredentialsError`` for two different tokens and ``ValueError`` for a token
    that is not RFC 6750 b64token syntax.
    """
    found: list[str] = []
    if cfg.header is not None:
        if cfg.header.lower() == "authorization":
            t = scheme_credentials(request.headers, "bearer")
            if t is not None:
                found.append(t)
        else:
            vals = request.headers.get_all(cfg.header)
            for v in vals:
                s, sep, rest = v.strip().partition(" ")
                found.append(rest.strip() if sep and s.lower() == "bearer" else v.strip())
    if cfg.cookie is not None:
        found.extend(cookie_values(request.headers, cfg.cookie))
    if cfg.query_param is not None and request.query:
        found.extend(query_values(request.query, cfg.query_param))
    token = _single(found)
    if token is not None and not _B64TOKEN.match(token):
        raise ValueError("malformed token")
    return token


def hide_bearer(request: Request, cfg: BearerSourceConfig) -> None:
    """Remove the token from every configured source of the upstream request."""
    if cfg.header is not None:
        if cfg.header.lower() == "authorization":
            kept = [
                v
                for v in request.headers.get_all("authorization")
                if v.strip().partition(" ")[0].lower() != "bearer"
            ]
            request.headers.remove("authorization")
            for v in kept:
                request.headers.add("authorization", v)
        else:
            request.headers.remove(cfg.header)
    if cfg.cookie is not None:
        remove_cookie(request.headers, cfg.cookie)
    if cfg.query_param is not None and request.query:
        request.query = remove_query_params(request.query, {cfg.query_param})

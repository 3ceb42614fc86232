"""Cache keys.

A primary key is ``"<route>/<digest>"``: the route name (``/`` cannot appear in one, so a
route's keys share the prefix ``purge_route`` deletes) and a SHA-256 digest of the configured
key parts. Variants of a primary key live at ``"<primary>#<gen>#<digest>"`` where the digest
covers the selecting request fields named by the Vary index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from portway.http.models import Request
from portway.plugins.cache.config import QueryKeyConfig
from portway.plugins.cache.policy import Pairs, normalise_field

_SEP = b"\x00"


@dataclass(frozen=True, slots=True)
class UrlParts:
    """The URL-shaped inputs of a key, so Location/Content-Location can be keyed too."""

    scheme: str
    host: str
    path: str
    query: bytes


def _filter_query(query: bytes, q: QueryKeyConfig) -> bytes:
    if not query:
        return b""
    params = [p for p in query.split(b"&") if p]
    include = {n.encode("latin-1") for n in q.include} if q.include is not None else None
    exclude = {n.encode("latin-1") for n in q.exclude}
    kept = []
    for p in params:
        name = p.split(b"=", 1)[0]
        if include is not None and name not in include:
            continue
        if name in exclude:
            continue
        kept.append(p)
    if q.sort:
        kept.sort(key=lambda p: p.split(b"=", 1)[0])
    return b"&".join(kept)


def _cookie(pairs: Pairs, name: str) -> str:
    want = name.encode("latin-1")
    for k, v in pairs:
        if k != b"cookie":
            continue
        for part in v.split(b";"):
            n, _, val = part.strip().partition(b"=")
            if n == want:
                return val.decode("latin-1")
    return ""


class KeyBuilder:
    """Builds primary keys from the configured parts (immutable, shared by requests)."""

    def __init__(self, parts: Sequence[str | dict[str, Any]]) -> None:
        self._parts: list[str | QueryKeyConfig] = []
        for p in parts:
            if isinstance(p, str):
                self._parts.append(p)
            else:
                qc = p["query"]
                self._parts.append(qc if isinstance(qc, QueryKeyConfig) else QueryKeyConfig(**qc))
        # a different key layout must never read objects stored under another one
        self._seed = repr(self._parts).encode()

    @property
    def url_only(self) -> bool:
        """True when a URL alone determines the key (so any URL can be invalidated)."""
        return all(
            not isinstance(p, str) or p in ("method", "scheme", "host", "path", "query")
            for p in self._parts
        )

    def primary(
        self,
        route: str,
        url: UrlParts,
        request: Request,
        consumer: str | None,
    ) -> str:
        out: list[bytes] = [self._seed]
        for p in self._parts:
            if isinstance(p, QueryKeyConfig):
                v = _filter_query(url.query, p)
            elif p == "method":
                # HEAD is answered from the stored GET response (RFC 9110 §9.3.2)
                v = b"GET"
            elif p == "scheme":
                v = url.scheme.encode("latin-1")
            elif p == "host":
                v = url.host.lower().encode("latin-1")
            elif p == "path":
                v = url.path.encode("utf-8", "surrogateescape")
            elif p == "query":
                v = url.query
            elif p == "consumer":
                v = (consumer or "").encode("utf-8")
            elif p.startswith("header:"):
                v = (normalise_field(request.headers.raw(), p[7:].lower()) or "").encode("latin-1")
            else:
                v = _cookie(request.headers.raw(), p[7:]).encode("latin-1")
            out.append(v)
        # one length-prefixed field per part: no two different part lists hash alike
        h = hashlib.sha256(b"".join(b"%d:%b" % (len(v), v) for v in out))
        return f"{route}/{h.hexdigest()[:40]}"


def request_url(request: Request) -> UrlParts:
    return UrlParts(request.scheme, request.host, request.path, request.query)


def resolve_location(base: UrlParts, value: str) -> UrlParts | None:
    """Resolve a Location/Content-Location value against the request URL; ``None`` when it
    points at another origin (RFC 9111 §4.4 only invalidates same-origin URLs)."""
    value = value.strip()
    if not value:
        return None
    origin = f"{base.scheme}://{base.host}"
    try:
        u = urlsplit(urljoin(origin + base.path, value))
    except ValueError:
        return None
    if u.scheme.lower() != base.scheme.lower() or u.netloc.lower() != base.host.lower():
        return None
    return UrlParts(base.scheme, base.host, u.path or "/", u.query.encode("latin-1", "replace"))


def variant_key(primary: str, gen: str, names: Sequence[str], req: Pairs) -> str:
    h = hashlib.sha256()
    for n in names:
        h.update(n.encode("latin-1"))
        h.update(_SEP)
        v = normalise_field(req, n)
        h.update(b"\x01" if v is None else v.encode("latin-1") + _SEP)
    return f"{primary}#{gen}#{h.hexdigest()[:32]}"

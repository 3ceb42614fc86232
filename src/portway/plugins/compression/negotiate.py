"""Accept-Encoding negotiation (RFC 9110 §12.5.3) and the other checks of ``compression``."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase


def parse_accept_encoding(value: str) -> dict[str, float]:
    """``coding -> q`` of an Accept-Encoding value (codings lower-cased, ``x-gzip`` read as
    ``gzip``). A malformed or out-of-range q makes its member not acceptable (q=0)."""
    out: dict[str, float] = {}
    for member in value.split(","):
        coding, _, params = member.partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        if coding == "x-gzip":
            coding = "gzip"
        q = 1.0
        for p in params.split(";"):
            k, eq, v = p.partition("=")
            if eq and k.strip().lower() == "q":
                try:
                    q = float(v.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        # a coding listed twice keeps its first weight, as most servers do
        out.setdefault(coding, q)
    return out


def choose(accept: str | None, algorithms: Sequence[str]) -> str | None:
    """The configured algorithm the client weights highest (q > 0), ties broken by the
    configured order; ``*`` gives its weight to codings not listed. No Accept-Encoding
    means no compression (RFC 9110 allows any coding then, but old clients send none)."""
    if accept is None:
        return None
    weights = parse_accept_encoding(accept)
    star = weights.get("*", 0.0)
    best: str | None = None
    best_q = 0.0
    for algo in algorithms:
        q = weights.get(algo, star)
        if q > best_q:
            best, best_q = algo, q
    return best


def media_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.partition(";")[0].strip().lower() or None


def type_allowed(content_type: str | None, patterns: Sequence[str]) -> bool:
    """Whether the response's media type matches one of ``patterns`` (``text/*``,
    ``application/*+json``, exact names; parameters such as charset are ignored)."""
    mt = media_type(content_type)
    return mt is not None and any(fnmatchcase(mt, p) for p in patterns)


def has_no_transform(cache_control: list[str]) -> bool:
    return any(
        d.strip().lower().partition("=")[0] == "no-transform"
        for v in cache_control
        for d in v.split(",")
    )


def weaken_etag(etag: str) -> str:
    """A strong validator becomes weak: the encoded bytes differ from the upstream's, so the
    strong one no longer names them, while the content is the same (what nginx does)."""
    etag = etag.strip()
    return etag if etag.startswith("W/") else "W/" + etag

"""Which keys an unsafe request or an admin purge invalidates (RFC 9111 §4.4)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.pipeline.context import RequestContext
from portway.plugins.cache.keys import KeyBuilder, UrlParts, request_url, resolve_location


def targets(
    ctx: RequestContext, resp: Response, key: Callable[[RequestContext, UrlParts], str]
) -> set[str]:
    """The primary keys of the request's URL and its response's same-origin Location /
    Content-Location. Primary keys suffice: variants hang off the Vary index's generation
    and become unreachable with it."""
    base = request_url(ctx.request)
    keys = {key(ctx, base)}
    for name in ("location", "content-location"):
        v = resp.headers.get(name)
        if v is not None:
            target = resolve_location(base, v)
            if target is not None:
                keys.add(key(ctx, target))
    return keys


def url_key(keys: KeyBuilder, route: str | None, url: str, host: str | None) -> str | None:
    """The primary key of ``url`` on ``route``; ``None`` when a URL alone does not make the
    key (other parts are configured) or the binding is not a route's."""
    if not keys.url_only or route is None:
        return None
    u = urlsplit(url)
    h = u.netloc or host or ""
    parts = UrlParts(u.scheme or "http", h, u.path or "/", u.query.encode("latin-1"))
    dummy = Request(method="GET", path=parts.path, query=parts.query, headers=Headers())
    return keys.primary(route, parts, dummy, None)

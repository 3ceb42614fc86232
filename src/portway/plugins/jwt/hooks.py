"""``jwt``'s ``on_request`` for a token it verified before, as :class:`SyncHooks` (compiled
with mypyc, setup.py ``HOT_MODULES``).

Only the common case is done here: one bearer token in ``Authorization`` (the default
source), found in the verified-token cache (``jwt/cache.py``) and still valid, no anonymous
fallback configured. Everything else — no token, several, a malformed one, a cache miss,
other sources — runs the plugin's own ``on_request`` (driven here; when it has to await a
JWKS fetch it suspends and the runner hands the request to the connection's task, see
``pipeline/suspend.py``), so every refusal and every edge case is the general code's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Any, Final

from portway.http.models import Request, Response
from portway.pipeline.context import RequestContext
from portway.pipeline.runner import SyncHooks, drive
from portway.plugins._identity.headers import STANDARD, consumer_pairs
from portway.plugins.jwt.cache import TokenCache

#: RFC 6750 b64token (as ``_identity/tokens.py``)
B64TOKEN: Final = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")

Hook = Callable[[RequestContext], Coroutine[Any, Any, Response | None]]


class JwtHooks(SyncHooks):
    """``full`` is the plugin's ``on_request``; ``hide`` removes the token upstream (None when
    ``hide_credentials`` is off); ``clock`` the plugin's wall clock."""

    def __init__(
        self,
        cache: TokenCache,
        full: Hook,
        hide: Callable[[Request], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self.cache = cache
        self.full = full
        self.hide = hide
        self.clock = clock

    def request(self, ctx: RequestContext) -> Response | None:
        token = _bearer(ctx.request)
        consumer = self.cache.get(token, self.clock()) if token is not None else None
        if consumer is None:
            return drive(self.full(ctx))
        up = ctx.upstream_request
        headers = up.headers
        for k, _ in headers.raw():
            if k in STANDARD:
                headers.remove_many(STANDARD)
                break
        hide = self.hide
        if hide is not None:
            hide(up)
        ctx.consumer = consumer
        pairs = self.cache.pairs(consumer)
        add = headers.add_raw
        for name, value in consumer_pairs(consumer) if pairs is None else pairs:
            add(name, value)
        return None


def _bearer(req: Request) -> str | None:
    """The token of the one ``Authorization: Bearer`` field, when there is exactly one such
    field and the token is well-formed; otherwise None (the general code decides)."""
    token: str | None = None
    for k, v in req.headers.raw():
        if k == b"authorization":
            s, _, rest = v.decode("latin-1").strip().partition(" ")
            if s.lower() == "bearer":
                if token is not None:
                    return None
                token = rest.strip()
    if token is None or B64TOKEN.match(token) is None:
        return None
    return token

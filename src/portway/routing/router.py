"""Router contract (placeholder implementation: linear scan; replaced by the compiled radix
router). ``Router(routes).match(host, method, path, headers)`` returns a :class:`RouteMatch`
or ``None``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from portway.config.schema import RouteConfig
from portway.http.headers import Headers


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """The outcome of matching one request.

    ``index`` is the route's position in the config list; ``params`` holds template captures;
    ``prefix`` is the literal path prefix that matched (what ``strip_prefix`` removes, ``""``
    for exact/regex matches); ``pattern`` is the path form that matched; ``considered`` is how
    many candidate routes were examined (for debugging output).
    """

    route: RouteConfig
    index: int
    params: dict[str, str] = field(default_factory=dict)
    prefix: str = ""
    pattern: str = ""
    considered: int = 0


class Router:
    """Immutable; build once per config. Thread-safe to share."""

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self._routes = list(routes)

    def match(self, host: str, method: str, path: str, headers: Headers) -> RouteMatch | None:
        for i, r in enumerate(self._routes):
            m = r.match
            if m.methods and method not in m.methods:
                continue
            if m.hosts and host not in m.hosts:
                continue
            for p in m.paths:
                if p.startswith("=") and path == p[1:]:
                    return RouteMatch(r, i, {}, "", p, i + 1)
                if p.startswith("/") and "{" not in p:
                    base = p.rstrip("/")
                    if path == base or path.startswith(base + "/") or p == "/":
                        return RouteMatch(r, i, {}, base, p, i + 1)
        return None

    def table(self) -> list[tuple[int, str, RouteConfig]]:
        """(priority rank, path form, route) in matching priority order, for ``portway routes``."""
        return [(i, p, r) for i, r in enumerate(self._routes) for p in r.match.paths]

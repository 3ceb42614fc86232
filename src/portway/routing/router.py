"""The compiled router: host index → path index → method and header predicates.

``Router(routes).match(host, method, path, headers)`` returns the :class:`RouteMatch` of the
highest-priority route that accepts the request, or ``None``; after a ``None``,
``allowed_methods(host, path, headers)`` tells a 405 (the path matched, the method did not)
from a 404. The full rules are in ``docs/routing.md``; in short:

1. host tier: routes listing the request host exactly, then routes whose ``*.suffix`` matches
   (longer suffix first), then routes without hosts; a route whose hosts all fail is skipped;
2. within a tier, by path form: exact, then template/prefix by literal length (longest first;
   on a tie template, then catch-all template, then prefix), then regex;
3. ties (except regex): more header conditions first, then routes with a methods list;
4. then the route declared first, then the path form listed first;
5. methods and headers narrow: a candidate that fails them is skipped for the next one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from portway.config.schema import RouteConfig
from portway.http.headers import Headers
from portway.http.memo import remember
from portway.routing.entry import Entry, compile_entries
from portway.routing.params import NO_PARAMS
from portway.routing.tree import PathTable

__all__ = ["RouteMatch", "Router"]


@dataclass(slots=True)
class RouteMatch:
    """The outcome of matching one request.

    ``index`` is the route's position in the config list; ``params`` holds template captures
    and regex named groups (raw, still percent-encoded); ``prefix`` is the literal path prefix
    that matched a prefix form (what ``strip_prefix`` removes; never ends in ``/``; ``""`` for
    the ``/`` form and for exact, template and regex matches); ``pattern`` is the path form that
    matched, as written; ``considered`` is how many candidate entries were examined.
    """

    route: RouteConfig
    index: int
    params: dict[str, str] = field(default_factory=dict)
    prefix: str = ""
    pattern: str = ""
    considered: int = 0
    #: the route's name (a copy: cheaper to read than ``route.name`` on the pydantic model)
    name: str = ""

    # An explicit __init__ (compiled by mypyc; the dataclass one would be interpreted). Treat
    # a RouteMatch as immutable: it is shared by everything that reads the request context,
    # and a memoised match by every request that hits the memo (its params are read-only).
    def __init__(
        self,
        route: RouteConfig,
        index: int,
        params: dict[str, str] | None = None,
        prefix: str = "",
        pattern: str = "",
        considered: int = 0,
        name: str | None = None,
    ) -> None:
        self.route = route
        self.name = route.name if name is None else name
        self.index = index
        self.params = {} if params is None else params
        self.prefix = prefix
        self.pattern = pattern
        self.considered = considered


_MEMO_SIZE: Final = 1024


def _host_pattern(h: str) -> str:
    # Ports are ignored: the data plane routes on the host name alone (see docs/routing.md).
    name, sep, port = h.rpartition(":")
    return name if sep and port.isdigit() else h


def _result(e: Entry, m: re.Match[str] | None, segs: list[str], considered: int) -> RouteMatch:
    params: dict[str, str]
    if m is not None:
        params = {k: v for k, v in m.groupdict().items() if v is not None}
    else:
        params = {name: segs[i] for i, name in e.params} if e.params else {}
        if e.catchall is not None:
            params[e.catchall] = "/".join(segs[e.nseg :])
    return RouteMatch(e.route, e.index, params, e.prefix, e.pattern, considered, e.name)


class Router:
    """Routes compiled once into an immutable index; safe to share between tasks.

    ``match`` costs one dict lookup per host tier plus a walk of at most one tree node per
    path segment (per ``{param}`` branch), independent of the number of routes; only regex
    forms are tried one by one. Raises ``ValueError`` naming the route for an invalid path
    form.
    """

    __slots__ = ("_any", "_entries", "_exact", "_last", "_memo", "_routes", "_wild")

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self._routes = tuple(routes)
        entries = compile_entries(self._routes)
        self._entries = tuple(entries)
        exact: dict[str, list[Entry]] = {}
        wild: dict[str, list[Entry]] = {}
        anyhost: list[Entry] = []
        for e in entries:
            hosts = e.route.match.hosts
            if not hosts:
                anyhost.append(e)
                continue
            for h in dict.fromkeys(_host_pattern(h) for h in hosts):
                if h.startswith("*."):
                    wild.setdefault(h[2:], []).append(e)
                else:
                    exact.setdefault(h, []).append(e)
        self._exact = {h: PathTable(v) for h, v in exact.items()}
        self._wild = {s: PathTable(v) for s, v in wild.items()}
        self._any = PathTable(anyhost)
        #: recent (host, method, path) → the match, for matches that need neither the headers
        #: nor captured params (so the key decides the answer); only when no route has header
        #: conditions. The match is shared by the requests that hit it (its params are a
        #: read-only empty dict). Bounded; a new graph brings a new router.
        self._memo: dict[tuple[str, str, str], RouteMatch] | None = (
            None if any(e.headers for e in entries) else {}
        )
        #: the memo's last hit or entry, by identity of its key's strings (the server's
        #: parser hands the same objects for a repeated Host and path: no tuple, no hash)
        self._last: tuple[str, str, str, RouteMatch] | None = None

    def _tables(self, host: str) -> list[PathTable]:
        """The host tiers that apply to ``host``, most specific first."""
        if host.endswith("."):
            host = host[:-1]
        out: list[PathTable] = []
        t = self._exact.get(host)
        if t is not None:
            out.append(t)
        if self._wild:
            i = host.find(".")
            while i > 0:
                t = self._wild.get(host[i + 1 :])
                if t is not None:
                    out.append(t)
                i = host.find(".", i + 1)
        out.append(self._any)
        return out

    def match(self, host: str, method: str, path: str, headers: Headers) -> RouteMatch | None:
        """The best route for the request, or ``None``.

        ``host`` is lower-cased without port; ``path`` is the normalised path (it must start
        with ``/``; anything else matches nothing); ``method`` is compared case-sensitively.
        """
        memo = self._memo
        if memo is not None:
            last = self._last
            if last is not None and path is last[2] and host is last[0] and method is last[1]:
                return last[3]
        if not path.startswith("/"):
            return None
        if memo is not None:
            hit = memo.get((host, method, path))
            if hit is not None:
                self._last = (host, method, path, hit)
                return hit  # shared: read-only by contract, its params cannot change
        segs = path[1:].split("/")
        found: Entry | None = None
        rx: re.Match[str] | None = None
        considered = 0
        if not self._exact and not self._wild:
            # the common single-site gateway: no host-specific routes at all
            found, rx, considered = self._any.find(method, path, segs, headers)
        else:
            for table in self._tables(host):
                e, m, n = table.find(method, path, segs, headers)
                considered += n
                if e is not None:
                    found, rx = e, m
                    break
        if found is None:
            return None
        if memo is not None and rx is None and not found.params and found.catchall is None:
            shared = RouteMatch(
                found.route,
                found.index,
                NO_PARAMS,
                found.prefix,
                found.pattern,
                considered,
                found.name,
            )
            self._last = (host, method, path, shared)
            return remember(memo, (host, method, path), shared, _MEMO_SIZE)
        return _result(found, rx, segs, considered)

    def allowed_methods(self, host: str, path: str, headers: Headers) -> frozenset[str]:
        """After ``match`` returned ``None``: the methods some route would accept for this
        host, path and headers (answer 405 with ``Allow``), or an empty set (answer 404).

        Only routes restricting methods can contribute, since a route without a methods list
        would have matched; listing ``GET`` does not imply ``HEAD``.
        """
        if not path.startswith("/"):
            return frozenset()
        segs = path[1:].split("/")
        allowed: set[str] = set()
        for table in self._tables(host):
            for e in table.path_matches(path, segs):
                if e.methods is not None and e.accepts_headers(headers):
                    allowed.update(e.methods)
        return frozenset(allowed)

    def table(self) -> list[tuple[int, str, RouteConfig]]:
        """(rank, path form, route) in matching priority order, rank 1 first, for
        ``portway routes``. Routes with an exact host come first, then wildcard-only routes
        (longest suffix first), then host-less ones; the host tier that applies is chosen per
        request, so this is the order for a request matching every host listed."""

        def host_class(r: RouteConfig) -> tuple[int, int]:
            hosts = [_host_pattern(h) for h in r.match.hosts]
            if not hosts:
                return (2, 0)
            if any(not h.startswith("*.") for h in hosts):
                return (0, 0)
            return (1, -max(len(h) for h in hosts))

        ordered = sorted(self._entries, key=lambda e: (host_class(e.route), e.key))
        return [(i + 1, e.form.raw, e.route) for i, e in enumerate(ordered)]

"""Compiled route entries: one per (route, path form), with the method and header predicates
and the static priority key the router sorts by."""

from __future__ import annotations

import re
from collections.abc import Sequence

from portway.config.paths import PathForm, PathKind, parse_path
from portway.config.schema import RouteConfig
from portway.http.headers import Headers

__all__ = ["Entry", "HeaderCondition", "compile_entries", "header_regex"]


def header_regex(pattern: str) -> re.Pattern[str]:
    """The compiled form of a ``"~regex"`` header condition, used with ``search``: a pattern
    that anchors itself (starts with ``^`` or ends with ``$``) is used as written, so
    ``~^application/grpc-web`` matches ``application/grpc-web+proto``; one without anchors
    must match the whole value (``~v[0-9]+`` matches ``v12``, not ``xv1`` or ``v1x``)."""
    if pattern.startswith("^") or (pattern.endswith("$") and not pattern.endswith("\\$")):
        return re.compile(pattern)
    return re.compile(rf"\A(?:{pattern})\Z")


class HeaderCondition:
    """``name: value`` (exact, case-sensitive) or ``name: "~regex"`` (see
    :func:`header_regex`). A request satisfies it when any of its fields with that name does;
    an absent field never does."""

    __slots__ = ("exact", "name", "regex")

    def __init__(self, name: str, spec: str) -> None:
        self.name = name.lower().encode("latin-1")
        self.exact: bytes | None = None
        self.regex: re.Pattern[str] | None = None
        if spec.startswith("~"):
            self.regex = header_regex(spec[1:])
        else:
            self.exact = spec.encode("latin-1")

    def satisfied(self, headers: Headers) -> bool:
        name, exact, rx = self.name, self.exact, self.regex
        for k, v in headers.raw():
            if k == name:
                if exact is not None:
                    if v == exact:
                        return True
                elif rx is not None and rx.search(v.decode("latin-1")) is not None:
                    return True
        return False


class Entry:
    """One path form of one route, compiled.

    ``key`` orders entries within a host tier: exact forms, then segment forms (template and
    prefix) by literal length descending, template before catch-all template before prefix,
    then regex forms. Ties among exact and segment forms go to the route with more header
    conditions, then to one with a methods list; remaining ties (and all regex forms) follow
    the declared route order, then the order of its paths.
    ``rank`` is the entry's position in that order (0 first), set by the router.
    """

    __slots__ = (
        "catchall",
        "form",
        "headers",
        "index",
        "key",
        "methods",
        "name",
        "nseg",
        "params",
        "path_index",
        "pattern",
        "prefix",
        "rank",
        "route",
    )

    def __init__(self, route: RouteConfig, index: int, path_index: int, form: PathForm) -> None:
        self.route = route
        self.name = route.name
        self.index = index
        self.path_index = path_index
        self.form = form
        self.rank = 0
        # Copied out of the form: the hot path reads them without another indirection.
        self.pattern = form.raw
        self.prefix = form.literal if form.kind is PathKind.PREFIX else ""
        self.params = form.params
        self.catchall = form.catchall
        self.nseg = len(form.segments)
        m = route.match
        self.methods: frozenset[str] | None = frozenset(m.methods) if m.methods else None
        self.headers = tuple(HeaderCondition(k, v) for k, v in m.headers.items())
        # On equal path rank the route with more conditions is the more specific one (as in
        # Kong): more header conditions first, then a methods list; regex stays declared order.
        specific = (-len(self.headers), 0 if self.methods else 1)
        if form.kind is PathKind.EXACT:
            cls, length = 0, 0
        elif form.kind is PathKind.REGEX:
            cls, length, specific = 2, 0, (0, 0)
        else:
            cls, length = 1, -form.literal_len
        self.key: tuple[int, ...] = (cls, length, form.kind, *specific, index, path_index)

    def accepts(self, method: str, headers: Headers) -> bool:
        """Whether the method and header conditions hold (the path already matched)."""
        if self.methods is not None and method not in self.methods:
            return False
        if not self.headers:
            return True
        return all(cond.satisfied(headers) for cond in self.headers)

    def accepts_headers(self, headers: Headers) -> bool:
        return all(cond.satisfied(headers) for cond in self.headers)

    def __repr__(self) -> str:
        return f"Entry({self.route.name!r}, {self.form.raw!r}, rank={self.rank})"


def compile_entries(routes: Sequence[RouteConfig]) -> list[Entry]:
    """All entries of ``routes`` sorted by priority, ranks assigned; ``ValueError`` names the
    route and path form that does not parse."""
    entries: list[Entry] = []
    for i, route in enumerate(routes):
        for j, raw in enumerate(route.match.paths):
            try:
                form = parse_path(raw)
            except ValueError as exc:
                raise ValueError(f"route {route.name!r}: {exc}") from exc
            entries.append(Entry(route, i, j, form))
    entries.sort(key=lambda e: e.key)
    for rank, e in enumerate(entries):
        e.rank = rank
    return entries

"""BFF profiles: each request gets one profile (or ``default``), and the route's chain for it.

A profile matches when every condition it gives holds: the listener's name is one of
``listeners``, the Host is one of ``hosts`` (exact or ``*.suffix``), and every header in
``headers`` has the value (exact, or ``~regex`` as in route matches:
:func:`portway.routing.entry.header_regex`). Profiles are tried in config order
and the first match wins; no match is the ``default`` profile.

Chains are built with the graph, one per (route, profile the route serves)
(:func:`portway.runtime.builder.build_graph`), so selecting one is a few comparisons and a
dict lookup per request. The selected name is put in ``ctx.extra["profile"]`` for logs,
metrics (``portway_profile_requests``) and explain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from portway.config.schema import ProfileConfig
from portway.pipeline.context import RequestContext
from portway.pipeline.runner import Chain
from portway.routing.entry import HeaderCondition

DEFAULT: Final = "default"


@dataclass(frozen=True, slots=True)
class _Matcher:
    name: str
    listeners: frozenset[str]
    exact_hosts: frozenset[str]
    suffixes: tuple[str, ...]
    headers: tuple[HeaderCondition, ...]

    def matches(self, ctx: RequestContext, listener: str) -> bool:
        if self.listeners and listener not in self.listeners:
            return False
        if self.exact_hosts or self.suffixes:
            host = ctx.request.host.lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if not (
                host in self.exact_hosts
                or name in self.exact_hosts
                or any(name.endswith(s) for s in self.suffixes)
            ):
                return False
        hdrs = ctx.request.headers
        return all(c.satisfied(hdrs) for c in self.headers)


class ProfileSelector:
    """Selects a request's profile and the matching chain of its route."""

    def __init__(self, profiles: dict[str, ProfileConfig]) -> None:
        self.names = (*profiles, DEFAULT)
        self._matchers = tuple(
            _Matcher(
                name,
                frozenset(p.match.listeners),
                frozenset(h for h in p.match.hosts if not h.startswith("*.")),
                tuple(h[1:] for h in p.match.hosts if h.startswith("*.")),
                tuple(HeaderCondition(k, v) for k, v in p.match.headers.items()),
            )
            for name, p in profiles.items()
        )

    def select(self, ctx: RequestContext, listener: str) -> str:
        for m in self._matchers:
            if m.matches(ctx, listener):
                return m.name
        return DEFAULT

    def chain_for(self, ctx: RequestContext, conn: Any, rt: Any) -> Chain | None:
        """The chain of ``rt`` for this request's profile, ``None`` when the route does not
        serve it. Records the profile in ``ctx.extra["profile"]``."""
        name = self.select(ctx, getattr(conn, "listener", ""))
        ctx.extra["profile"] = name
        chains: dict[str, Chain] = rt.profile_chains
        return chains.get(name)

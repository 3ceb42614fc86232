"""Which upstream serves a request of a route with traffic rules (split, versions, fallback).

The route's :class:`~portway.proxy.traffic.RoutePolicy` decides once per request and stores
a :class:`Choice` under :data:`CHOICE` in ``ctx.state``; forwarding (task-free or general)
then uses ``choice.rt``, a route runtime whose upstream is the chosen one. Access logs,
explain and debug headers read the variant from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from portway.pipeline.context import ContextKey

if TYPE_CHECKING:
    from portway.pipeline.context import RequestContext


class Choice:
    """One request's variant. ``rt`` is a ``RouteRuntime`` (typed ``Any``: this module sits
    below the runtime); ``variant`` the chosen upstream's name (a bounded label); ``reason``
    one of ``split``, ``sticky``, ``force``, ``version``, ``fallback``; ``version`` the API
    version served (versions routes); ``headers`` response fields to add (Set-Cookie,
    Deprecation, Sunset, Link) — a request with some cannot finish on the task-free path."""

    __slots__ = ("headers", "reason", "rt", "variant", "version")

    def __init__(
        self,
        rt: Any,
        variant: str,
        reason: str,
        version: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.rt = rt
        self.variant = variant
        self.reason = reason
        self.version = version
        self.headers = headers or []

    def describe(self) -> dict[str, Any]:
        return {"variant": self.variant, "reason": self.reason, "version": self.version}


CHOICE: Final = ContextKey[Choice]("traffic.choice")


def variant_of(ctx: RequestContext) -> str | None:
    """The variant that served ``ctx`` (``None`` on routes without traffic rules)."""
    if ctx._state is None:
        return None
    c = ctx.state.get(CHOICE)
    return c.variant if c is not None else None

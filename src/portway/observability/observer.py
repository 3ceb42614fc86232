"""What the data plane tells once per request, after its last byte (metrics, exporters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portway.pipeline.context import RequestContext


class Observer:
    """Subclass it and register the instance with the gateway (``Gateway(observers=...)``).

    ``on_request_done`` runs on the event loop for every request, whatever path served it;
    it must be quick and should not raise (the graph logs and drops an exception). A base
    class, not a ``Protocol``: compiled, the per-request call through it is direct.
    """

    def on_request_done(self, ctx: RequestContext) -> None:
        pass


class CallObserver(Observer):
    """An observer that is no :class:`Observer` subclass (a plain object with an
    ``on_request_done`` method, e.g. the dashboard's recent-errors recorder), wrapped so the
    compiled graph can hold it: compiled, an interpreted class cannot subclass
    :class:`Observer`, and the graph's list is typed by it."""

    def __init__(self, fn: Callable[[RequestContext], None]) -> None:
        self.fn = fn

    def on_request_done(self, ctx: RequestContext) -> None:
        self.fn(ctx)


def as_observer(obj: Any) -> Observer:
    """``obj`` itself when it is an :class:`Observer`, else its ``on_request_done`` wrapped."""
    if isinstance(obj, Observer):
        return obj
    return CallObserver(obj.on_request_done)

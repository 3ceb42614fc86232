"""What the data plane tells once per request, after its last byte (metrics, exporters)."""

from __future__ import annotations

from typing import TYPE_CHECKING

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

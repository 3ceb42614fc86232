"""What the data plane tells once per request, after its last byte (metrics, exporters)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from portway.pipeline.context import RequestContext


# interpreted subclasses (the dashboard's recent-errors recorder, third-party exporters) must
# be accepted where an Observer is expected: without this, a compiled build refused them
# with a TypeError on every request
@mypyc_attr(allow_interpreted_subclasses=True)
class Observer:
    """Subclass it and register the instance with the gateway (``Gateway(observers=...)``).

    ``on_request_done`` runs on the event loop for every request, whatever path served it;
    it must be quick and should not raise (the graph logs and drops an exception). A base
    class, not a ``Protocol``: compiled, the per-request call through it is direct.
    """

    def on_request_done(self, ctx: RequestContext) -> None:
        pass

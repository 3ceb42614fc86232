"""The history of configuration applies shown by the dashboard.

:class:`ApplyHistory` listens to the gateway's reload results (``Gateway.reload_listeners``:
``PUT /config``, ``POST /reload``, SIGHUP, ``--watch`` and cluster notices all end there) and
keeps the last ``size`` of them: when, the result, the errors of a rejected one, and the
version and hash of the graph that served afterwards.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portway.runtime.gateway import Gateway


class ApplyHistory:
    """A bounded, newest-first list of apply results of one gateway."""

    def __init__(self, gateway: Gateway, size: int = 50) -> None:
        self._gw = gateway
        self._ring: deque[dict[str, Any]] = deque(maxlen=size)
        g = gateway.graph_ref.current
        if g is not None:
            self._ring.append(
                {
                    "at": gateway.started,
                    "result": "start",
                    "errors": [],
                    "version": g.version,
                    "config_hash": g.config_hash,
                }
            )
        gateway.reload_listeners.append(self.on_reload)

    def on_reload(self, result: str) -> None:
        gw = self._gw
        g = gw.graph_ref.current
        last = gw.last_reload
        self._ring.append(
            {
                "at": last.get("at"),
                "result": result,
                "errors": [str(e) for e in last.get("errors", [])],
                "version": g.version if g is not None else None,
                "config_hash": g.config_hash if g is not None else None,
            }
        )

    def entries(self) -> list[dict[str, Any]]:
        return list(reversed(self._ring))

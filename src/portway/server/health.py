"""A worker's lifecycle as probes see it: starting → ready → draining.

Liveness (``/healthz``) only says the process answers: a restart would not help a gateway
that answers. Readiness (``/readyz``) says whether a load balancer should send traffic here:
not before the first config is loaded and the listeners are bound, and not once draining
(SIGTERM) started, while in-flight requests finish.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Health:
    """Flags set by :class:`~portway.server.worker.Worker`; read by the probe endpoints."""

    loaded: bool = False
    draining: bool = False

    @property
    def state(self) -> str:
        if self.draining:
            return "draining"
        return "ready" if self.loaded else "starting"

    @property
    def ready(self) -> bool:
        return self.loaded and not self.draining

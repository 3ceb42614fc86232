"""A target: one backend address with its runtime counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False, slots=True)
class Target:
    """One upstream address. Identity-compared; shared by all requests of a runtime graph.

    Counters (``in_flight``, ``ewma``) are plain fields mutated on the event loop thread only.
    ``pool`` is the keep-alive connection pool (``portway.http.pool.ConnectionPool``).
    """

    id: str
    host: str
    port: int
    scheme: str = "http"
    weight: int = 1
    healthy: bool = True
    draining: bool = False
    in_flight: int = 0
    #: peak-EWMA of response latency in seconds (0 = unknown)
    ewma: float = 0.0
    pool: Any = None
    breaker: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def available(self) -> bool:
        """Healthy, not draining, and the breaker (if any) would let a request through."""
        if not self.healthy or self.draining:
            return False
        b = self.breaker
        return b is None or b.available()

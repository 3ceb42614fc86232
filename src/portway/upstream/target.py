"""A target: one backend address with its runtime counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False, slots=True)
class Target:
    """One upstream address. Identity-compared; shared by all requests of a runtime graph.

    Counters (``in_flight``, ``ewma``) are plain fields mutated on the event loop thread only.
    ``pool`` is the keep-alive connection pool (``portway.http.pool.ConnectionPool``).
    ``breaker`` is a :class:`~portway.upstream.breaker.CircuitBreaker` or ``None``.

    The health fields (``fails``, ``probe_fails``, ``oks``, ``down_until``, ``down_reason``)
    belong to the upstream's :class:`~portway.upstream.health.HealthChecker`; read them, never
    write them.
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
    #: monotonic time of the last EWMA update (the EWMA decays with time since then)
    ewma_stamp: float = 0.0
    pool: Any = None
    breaker: Any = None
    #: consecutive failed requests seen by passive health checking
    fails: int = 0
    #: consecutive failed active probes
    probe_fails: int = 0
    #: consecutive successful active probes
    oks: int = 0
    #: when a passively-failed target without an active checker gets a trial request
    down_until: float = 0.0
    #: "passive" or "active" while unhealthy, "" otherwise
    down_reason: str = ""
    #: created by DNS discovery (removed again when the name stops resolving to it)
    discovered: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: ``authority`` as a Host field value (filled on first use by the data plane)
    host_field: bytes = b""

    def host_value(self) -> bytes:
        """``authority`` encoded, for a Host field (cached: asked for on every request)."""
        h = self.host_field
        if not h:
            h = self.host_field = self.authority.encode()
        return h

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}"

    @property
    def available(self) -> bool:
        """Healthy, not draining, weight > 0, and the breaker (if any) would let a request
        through."""
        if not self.healthy or self.draining or self.weight <= 0:
            return False
        b = self.breaker
        return b is None or bool(b.available())

    def __repr__(self) -> str:
        return f"Target({self.id!r}, weight={self.weight}, healthy={self.healthy})"

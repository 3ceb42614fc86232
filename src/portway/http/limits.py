"""The plain values ``http/`` is configured with (no configuration models at this layer).

``http/`` sits at the bottom of the layers (docs/architecture.md, "One request path"): it
must not import ``config`` (pydantic). Callers hand in any object with these attributes —
``config.schema.LimitsConfig`` and ``PoolConfig`` have them — and the connection copies what
it needs into its own fields when it is built (never a model read per request). The
classes here are the defaults for callers without a configuration (tests, ``serve_simple``).
"""

from __future__ import annotations

from typing import Protocol


class ServerLimits(Protocol):
    """What a client-facing connection needs (``server.limits`` in the config)."""

    @property
    def max_header_bytes(self) -> int: ...
    @property
    def max_header_count(self) -> int: ...
    @property
    def max_uri_bytes(self) -> int: ...
    @property
    def max_body_bytes(self) -> int | None: ...
    @property
    def header_timeout(self) -> float: ...
    @property
    def body_timeout(self) -> float: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def max_pipelined(self) -> int: ...


class PoolSettings(Protocol):
    """What an upstream connection pool needs (``upstreams.*.pool`` in the config)."""

    @property
    def max_idle(self) -> int: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def max_connections(self) -> int | None: ...
    @property
    def queue_timeout(self) -> float: ...
    @property
    def max_queue(self) -> int | None: ...


class Limits:
    """Plain :class:`ServerLimits` with the configuration's defaults."""

    def __init__(
        self,
        *,
        max_header_bytes: int = 32 * 1024,
        max_header_count: int = 100,
        max_uri_bytes: int = 8 * 1024,
        max_body_bytes: int | None = None,
        header_timeout: float = 10.0,
        body_timeout: float = 60.0,
        idle_timeout: float = 60.0,
        max_pipelined: int = 32,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count
        self.max_uri_bytes = max_uri_bytes
        self.max_body_bytes = max_body_bytes
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.idle_timeout = idle_timeout
        self.max_pipelined = max_pipelined

"""The ``upstreams:`` section of the config model: targets, timeouts, pool, health checks,
circuit breaker, retries, discovery and upstream TLS.

Part of the public contract of ``portway.yaml`` (see :mod:`portway.config.schema`, which
re-exports every name here: import from either).
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from portway.config.types import Duration, Model, TlsVersion

__all__ = [
    "ActiveHealthConfig",
    "Balancing",
    "CircuitBreakerConfig",
    "DiscoveryConfig",
    "HealthConfig",
    "PassiveHealthConfig",
    "PoolConfig",
    "RetryConfig",
    "RetryOn",
    "TargetConfig",
    "TimeoutsConfig",
    "UpstreamConfig",
    "UpstreamTlsConfig",
]


class TargetConfig(Model):
    url: str = Field(description="http://host:port of the target")
    weight: int = Field(1, ge=0, le=1000, description="relative share of traffic")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urlsplit(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"target url must be http(s)://host[:port], got {v!r}")
        try:
            _ = u.port
        except ValueError as e:
            raise ValueError(f"invalid port in {v!r}") from e
        return v


class TimeoutsConfig(Model):
    connect: Duration = Field(2.0, description="TCP connect timeout per attempt")
    read: Duration = Field(30.0, description="max wait between bytes from the upstream")
    write: Duration = Field(30.0, description="max wait for the upstream to accept bytes")
    total: Duration = Field(60.0, description="whole request, all attempts included")


class PoolConfig(Model):
    max_idle: int = Field(256, ge=0, description="idle keep-alive connections kept per target")
    idle_timeout: Duration = Field(60.0, description="idle connections older than this close")
    max_connections: int | None = Field(
        None,
        ge=1,
        description="connections open to one target at most, idle and busy (HTTP/2: "
        "multiplexed connections); a request finding them all busy waits its turn (FIFO). "
        "null: unlimited",
    )
    queue_timeout: Duration = Field(
        1.0,
        description="how long a request waits for a connection when max_connections are busy "
        "before it fails with 503 upstream_overloaded",
    )
    max_queue: int | None = Field(
        None,
        ge=0,
        description="requests waiting per target at most (beyond: 503 upstream_overloaded at "
        "once); null: unlimited",
    )


class ActiveHealthConfig(Model):
    path: str = Field("/healthz", description="probe path")
    interval: Duration = Field(2.0)
    timeout: Duration = Field(1.0)
    healthy_after: int = Field(2, ge=1)
    unhealthy_after: int = Field(3, ge=1)
    expect_status: list[int] = Field(default_factory=lambda: list(range(200, 400)))
    grpc_service: str | None = Field(
        None,
        description="HTTP/2 upstreams: probe with the gRPC health protocol "
        "(grpc.health.v1.Health/Check) for this service ('' = the whole server) instead of "
        "GET path",
    )


class PassiveHealthConfig(Model):
    unhealthy_after: int = Field(5, ge=1, description="consecutive failures before marking down")
    on_status: list[int] = Field(
        default_factory=list,
        description="upstream statuses that also count as failures (default none: only "
        "connect failures, resets and timeouts do; an origin's own 5xx are not ill health)",
    )
    recover_after: Duration = Field(
        10.0, description="with no active check, retry a passively-failed target after this"
    )
    max_ejection_percent: float = Field(
        50.0,
        ge=0,
        le=100,
        description="at most this share of the targets is out of service through passive "
        "checks at once (at least one target when > 0; 0 = passive checks never eject); the "
        "last healthy target is never ejected",
    )

    @field_validator("on_status")
    @classmethod
    def _statuses(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 100 <= s <= 599]
        if bad:
            raise ValueError(f"not HTTP statuses: {bad}")
        return v


class HealthConfig(Model):
    active: ActiveHealthConfig | None = None
    passive: PassiveHealthConfig | None = Field(default_factory=PassiveHealthConfig)
    min_healthy_percent: float = Field(
        50.0,
        ge=0,
        le=100,
        description="panic threshold: when fewer than this percentage of the targets are "
        "healthy, requests go to all targets regardless of health (0 disables panic mode)",
    )


class CircuitBreakerConfig(Model):
    failure_ratio: float = Field(0.5, gt=0, le=1)
    min_requests: int = Field(20, ge=1)
    window: Duration = Field(10.0)
    open_for: Duration = Field(5.0)
    half_open_probes: int = Field(3, ge=1)


RetryOn = Literal["connect_error", "timeout", "reset", "500", "502", "503", "504"]


class RetryConfig(Model):
    attempts: int = Field(2, ge=1, le=10, description="total tries, the first included")
    on: list[str] = Field(default_factory=lambda: ["connect_error", "502", "503", "504"])
    backoff: Duration = Field(0.025, description="base of exponential backoff with jitter")
    max_backoff: Duration = Field(1.0)
    budget_ratio: float = Field(0.2, ge=0, le=1, description="retries ≤ ratio x recent requests")
    budget_min_per_second: float = Field(
        10.0, ge=0, description="retries per second always allowed on top of budget_ratio"
    )
    per_try_timeout: Duration | None = Field(
        None,
        description="how long one attempt may wait for its response head; its expiry is a "
        "`timeout` failure (retried when `timeout` is in `on`)",
    )

    @field_validator("on", mode="before")
    @classmethod
    def _on(cls, v: Any) -> Any:
        if isinstance(v, list):
            out = [str(x) for x in v]
            ok = {"connect_error", "timeout", "reset"}
            for x in out:
                if x not in ok and not (x.isdigit() and 500 <= int(x) <= 599):
                    raise ValueError(
                        f"retry condition {x!r}: use connect_error, timeout, reset or a 5xx status"
                    )
            return out
        return v


class DiscoveryConfig(Model):
    dns: str = Field(description="name to resolve: A/AAAA, or SRV when it starts with '_'")
    port: int | None = Field(None, ge=1, le=65535, description="port for A/AAAA answers")
    refresh: Duration = Field(10.0)
    scheme: Literal["http", "https"] = "http"
    nameserver: str | None = Field(None, description="HOST:PORT of the DNS server; default: system")


Balancing = Literal[
    "round_robin",
    "weighted_round_robin",
    "least_connections",
    "least_latency",
    "consistent_hash",
    "random",
]


class UpstreamTlsConfig(Model):
    verify: bool = Field(True, description="verify the target's certificate and name")
    ca: str | None = Field(None, description="CA bundle to verify targets (default: system CAs)")
    server_name: str | None = Field(
        None, description="SNI and verified name (default: the target's host)"
    )
    client_cert: str | None = Field(None, description="PEM client certificate (mTLS)")
    client_key: str | None = Field(None, description="PEM key of client_cert")
    min_version: TlsVersion = Field("1.2", description="lowest TLS version offered")

    @model_validator(mode="after")
    def _pair(self) -> UpstreamTlsConfig:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        return self


class UpstreamConfig(Model):
    targets: list[TargetConfig] = Field(default_factory=list)
    balancing: Balancing = Field("weighted_round_robin")
    hash_on: str = Field("ip", description="ip | header:NAME | cookie:NAME | consumer | path")
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    pool: PoolConfig = Field(default_factory=PoolConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    circuit_breaker: CircuitBreakerConfig | None = None
    retries: RetryConfig = Field(default_factory=RetryConfig)
    discovery: DiscoveryConfig | None = None
    tls: UpstreamTlsConfig | None = Field(
        None, description="TLS to https:// targets (default: verified against the system CAs)"
    )
    host_header: Literal["preserve", "target"] = Field(
        "preserve", description="forward the client's Host or the target's host:port"
    )
    protocol: Literal["http1", "h2c", "h2", "auto"] = Field(
        "http1",
        description="http1 | h2c (HTTP/2 prior knowledge) | h2 (TLS + ALPN h2) | "
        "auto (ALPN on https targets, HTTP/1.1 otherwise); gRPC needs h2c or h2",
    )

    @field_validator("hash_on")
    @classmethod
    def _hash_on(cls, v: str) -> str:
        if v in ("ip", "consumer", "path") or re.match(r"^(header|cookie):[A-Za-z0-9_.-]+$", v):
            return v
        raise ValueError("hash_on must be ip, consumer, path, header:NAME or cookie:NAME")

    @model_validator(mode="after")
    def _targets(self) -> UpstreamConfig:
        if not self.targets and self.discovery is None:
            raise ValueError("an upstream needs targets or discovery")
        if self.tls is not None:
            plain = [t.url for t in self.targets if t.url.startswith("http://")]
            if plain or (self.discovery is not None and self.discovery.scheme == "http"):
                raise ValueError(
                    "tls applies to https:// targets: "
                    + (f"{plain[0]} is http://" if plain else "discovery.scheme is http")
                )
        return self

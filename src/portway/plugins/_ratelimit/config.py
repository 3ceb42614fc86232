"""Config pieces shared by the limiting plugins."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from portway.config.types import Duration
from portway.pipeline.plugin import PluginConfig
from portway.plugins._ratelimit.keys import check_cost, check_key_part

OnStoreError = Literal["allow", "deny"]
HeadersMode = Literal["ietf", "legacy", "both", "none"]


class RedisOptions(PluginConfig):
    url: str | None = Field(
        default=None, description="redis:// URL; default: the gateway's state.redis_url"
    )
    key_prefix: str | None = Field(
        default=None, description="prefix of every key; default: state.key_prefix + the plugin's"
    )
    timeout: Duration = Field(
        default=0.25,
        gt=0,
        description="connect and command timeout; keep short, it adds to latency",
    )
    backoff: Duration = Field(
        default=0.5,
        gt=0,
        description="after a failure, fail fast for this long before probing again",
    )
    max_backoff: Duration = Field(default=5.0, gt=0, description="cap of the doubling backoff")


class KeyedConfig(PluginConfig):
    key: list[str] = Field(
        default_factory=lambda: ["consumer"],
        description="consumer, credential, ip, header:NAME, route, service, global",
    )
    store: Literal["local", "redis"] = Field(
        default="local", description="local: exact per process; redis: exact across processes/nodes"
    )
    redis: RedisOptions = Field(default_factory=lambda: RedisOptions())
    on_store_error: OnStoreError = Field(
        default="allow",
        description="redis down: allow (local limiting at limit/instances) or deny (503)",
    )
    instances: int = Field(
        default=1,
        ge=1,
        le=10_000,
        description="processes sharing the limit; local limiting enforces limit/instances",
    )

    @field_validator("key")
    @classmethod
    def _key(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("key needs at least one part")
        return [check_key_part(p) for p in v]


def validate_cost(v: Any) -> int | str:
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ValueError("cost must be a non-negative integer or header:NAME")
    return check_cost(v)

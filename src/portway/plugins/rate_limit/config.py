"""Configuration of the ``rate_limit`` plugin."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from portway.config.types import Duration
from portway.pipeline.plugin import PluginConfig
from portway.plugins._ratelimit.algorithms import USES_BURST
from portway.plugins._ratelimit.config import HeadersMode, KeyedConfig, validate_cost
from portway.plugins._ratelimit.headers import POLICY_NAME

Algorithm = Literal["gcra", "token_bucket", "sliding_window", "fixed_window"]


class LimitConfig(PluginConfig):
    rate: float = Field(gt=0, le=1e9, description="units admitted per window")
    per: Duration = Field(description="window length, e.g. 1s, 1m, 1h")
    burst: float | None = Field(
        default=None,
        ge=1,
        le=1e9,
        description="capacity at once (gcra, token_bucket); default: rate",
    )
    name: str | None = Field(default=None, description="policy name in RateLimit headers")

    @field_validator("per")
    @classmethod
    def _per(cls, v: float) -> float:
        if not 0.001 <= v <= 366 * 86400:
            raise ValueError("per must be between 1ms and 366d")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not POLICY_NAME.match(v):
            raise ValueError("policy names use 1-64 letters, digits, _ . : -")
        return v


class RateLimitConfig(KeyedConfig):
    algorithm: Algorithm = Field(
        default="gcra", description="gcra | token_bucket | sliding_window | fixed_window"
    )
    limits: list[LimitConfig] = Field(min_length=1, max_length=16)
    cost: int | str = Field(default=1, description="units per request, or header:NAME")
    headers: HeadersMode = Field(default="both", description="ietf | legacy | both | none")
    max_local_keys: int = Field(
        default=100_000, ge=100, description="keys tracked by the local limiter before eviction"
    )

    _cost = field_validator("cost", mode="before")(classmethod(lambda cls, v: validate_cost(v)))

    @model_validator(mode="after")
    def _check(self) -> RateLimitConfig:
        if self.algorithm not in USES_BURST and any(lim.burst is not None for lim in self.limits):
            raise ValueError(f"burst applies to gcra and token_bucket, not {self.algorithm}")
        names = self.policy_names()
        if len(set(names)) != len(names):
            raise ValueError("limits need distinct names")
        return self

    def policy_names(self) -> list[str]:
        if len(self.limits) == 1:
            return [self.limits[0].name or "default"]
        return [lim.name or f"{lim.rate:g}-per-{lim.per:g}s" for lim in self.limits]

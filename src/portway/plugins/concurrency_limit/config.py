"""Configuration of the ``concurrency_limit`` plugin."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from portway.config.types import Duration
from portway.plugins._ratelimit.config import KeyedConfig


class ConcurrencyLimitConfig(KeyedConfig):
    max: int = Field(ge=1, le=1_000_000, description="requests in flight per key")
    lease_ttl: Duration = Field(
        default=300.0,
        gt=0,
        description="redis: a lease not released by then (crashed gateway) is dropped; "
        "must exceed the longest request",
    )
    status: Literal[429, 503] = Field(default=429, description="status when over the limit")

"""Configuration of the ``quota`` plugin."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from portway.plugins._ratelimit.config import HeadersMode, KeyedConfig, validate_cost


class QuotaConfig(KeyedConfig):
    day: int | None = Field(default=None, ge=1, le=10**12, description="units per calendar day")
    month: int | None = Field(default=None, ge=1, le=10**12, description="units per calendar month")
    timezone: str = Field(
        default="UTC", description="IANA zone whose midnight starts a day/month, e.g. Europe/Paris"
    )
    store: Literal["local", "redis"] = Field(
        default="redis", description="redis persists usage across restarts and instances"
    )
    cost: int | str = Field(default=1, description="units per request, or header:NAME")
    headers: HeadersMode = Field(default="both", description="ietf | legacy | both | none")

    _cost = field_validator("cost", mode="before")(classmethod(lambda cls, v: validate_cost(v)))

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r}") from e
        return v

    @model_validator(mode="after")
    def _some(self) -> QuotaConfig:
        if self.day is None and self.month is None:
            raise ValueError("set day and/or month")
        return self

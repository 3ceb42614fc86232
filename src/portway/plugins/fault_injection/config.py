"""Config of ``fault_injection``."""

from __future__ import annotations

from pydantic import Field, field_validator

from portway.config.traffic import Condition
from portway.pipeline.plugin import PluginConfig


def _bp(v: float) -> float:
    if round(v * 100) != round(v * 100, 6):
        raise ValueError("percent has at most two decimals")
    return v


class DelayConfig(PluginConfig):
    ms: int = Field(ge=0, le=600_000, description="added latency in milliseconds")
    percent: float = Field(100.0, ge=0, le=100, description="share of requests delayed")

    _p = field_validator("percent")(classmethod(lambda cls, v: _bp(v)))


class AbortConfig(PluginConfig):
    status: int = Field(503, ge=200, le=599, description="status answered instead")
    percent: float = Field(100.0, ge=0, le=100, description="share of requests aborted")

    _p = field_validator("percent")(classmethod(lambda cls, v: _bp(v)))


class FaultInjectionConfig(PluginConfig):
    delay: DelayConfig | None = Field(None, description="delay before the upstream is called")
    abort: AbortConfig | None = Field(None, description="answer instead of the upstream")
    when: Condition | None = Field(
        None, description="only requests with these headers / from these consumers"
    )

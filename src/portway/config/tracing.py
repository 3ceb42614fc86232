"""The ``tracing:`` configuration section.

It lives in ``config`` (not beside the tracer in ``observability/tracing.py``) so that the
schema imports nothing above the configuration layer: before, ``config.schema`` imported the
tracer, which imported ``pipeline.context`` and ``http``, and importing the HTTP server
loaded OpenTelemetry.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from portway.config.types import Duration

Propagation = Literal["tracecontext", "b3", "b3multi"]


class TracingConfig(BaseModel):
    """``tracing:`` section of ``portway.yaml`` (``observability/tracing.py`` uses it).
    Standalone (not built on ``config.schema.Model``), as it always was."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    enabled: bool = Field(False, description="trace requests and export spans over OTLP")
    service_name: str = Field("portway", description="service.name resource attribute")
    endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces", description="OTLP/HTTP traces URL (protobuf)"
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="extra HTTP headers sent with every export"
    )
    timeout: Duration = Field(10.0, description="export request timeout")
    sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="share of new traces sampled; parents' decision wins"
    )
    propagation: list[Propagation] = Field(
        default_factory=lambda: list[Propagation](["tracecontext"]),
        min_length=1,
        description="formats read from clients and written upstream, in precedence order",
    )
    max_queue_size: int = Field(2048, ge=1, description="spans buffered before dropping")
    max_export_batch_size: int = Field(512, ge=1, description="spans per export request")
    schedule_delay: Duration = Field(1.0, description="export interval of the batcher")
    shutdown_timeout: Duration = Field(
        1.0,
        description="on shutdown, how long spans still queued may take to export before "
        "they are dropped (a missing collector never delays the exit for longer)",
    )
    resource_attributes: dict[str, str] = Field(
        default_factory=dict, description="extra resource attributes (deployment.environment…)"
    )

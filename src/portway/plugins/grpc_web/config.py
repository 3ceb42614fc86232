"""``grpc_web`` config."""

from __future__ import annotations

from pydantic import Field

from portway.pipeline.plugin import PluginConfig


class GrpcWebConfig(PluginConfig):
    max_text_request_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1,
        description="largest grpc-web-text (base64) request body, decoded whole (413 beyond)",
    )

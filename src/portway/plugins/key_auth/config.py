"""Configuration of the ``key_auth`` plugin."""

from __future__ import annotations

from pydantic import Field

from portway.plugins._identity.base import IdentityConfig


class KeyAuthConfig(IdentityConfig):
    headers: list[str] = Field(
        default_factory=lambda: ["apikey", "x-api-key"],
        description="request headers that may carry the key",
    )
    query_params: list[str] = Field(
        default_factory=lambda: ["apikey"],
        description="query parameters that may carry the key ([] to disallow)",
    )
    hide_credentials: bool = Field(True, description="remove the key before forwarding")
    max_key_bytes: int = Field(1024, ge=1, description="longer keys are refused unhashed")

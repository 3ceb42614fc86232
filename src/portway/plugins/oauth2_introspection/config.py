"""Configuration of the ``oauth2_introspection`` plugin."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from portway.config.types import Duration
from portway.plugins._identity.base import IdentityConfig
from portway.plugins._identity.tokens import BearerSourceConfig


class IntrospectionConfig(IdentityConfig, BearerSourceConfig):
    endpoint: str = Field(description="RFC 7662 introspection endpoint URL")
    client_id: str = Field(description="client id used to authenticate to the endpoint")
    client_secret: str = Field(description="client secret used to authenticate to the endpoint")
    token_type_hint: str | None = Field("access_token", description="sent as token_type_hint")
    timeout: Duration = Field(2.0, description="introspection call timeout")
    cache_ttl: Duration = Field(
        300.0, description="upper bound on caching an active result (never past its exp)"
    )
    negative_cache_ttl: Duration = Field(5.0, description="how long an inactive token is cached")
    cache_size: int = Field(10_000, ge=0, description="cached introspection results")
    on_error: Literal["unavailable", "unauthorized"] = Field(
        "unavailable",
        description="introspection server down or slow: 503 (unavailable) or 401",
    )
    consumer_claim: str | None = Field(
        None,
        description="response member naming a configured consumer (username or id); when set, "
        "active tokens that name no consumer are refused",
    )
    max_token_bytes: int = Field(8192, ge=16, description="longer tokens are refused unsent")

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("endpoint must be an http(s) URL")
        return v

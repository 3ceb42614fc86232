"""Configuration of the ``basic_auth`` plugin."""

from __future__ import annotations

from pydantic import Field

from portway.config.types import Duration
from portway.plugins._identity.base import IdentityConfig


class BasicAuthConfig(IdentityConfig):
    hide_credentials: bool = Field(True, description="remove Authorization before forwarding")
    cache_size: int = Field(
        10_000, ge=0, description="recently verified user+password pairs remembered (0: off)"
    )
    cache_ttl: Duration = Field(300.0, description="how long a verified pair is remembered")
    max_concurrent_verifications: int = Field(
        4, ge=1, description="hash verifications running at once (they are CPU-heavy)"
    )

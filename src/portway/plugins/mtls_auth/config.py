"""Configuration of the ``mtls_auth`` plugin."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from portway.plugins._identity.base import IdentityConfig


def _both() -> list[Literal["subject", "san"]]:
    return ["subject", "san"]


class MtlsAuthConfig(IdentityConfig):
    match: list[Literal["subject", "san"]] = Field(
        default_factory=_both,
        min_length=1,
        description="certificate fields tried, in order, against consumers' mtls credentials",
    )
    allow_unmapped: bool = Field(
        False,
        description="accept a verified certificate that maps to no consumer, as a consumer "
        "named after its subject CN (or first SAN)",
    )

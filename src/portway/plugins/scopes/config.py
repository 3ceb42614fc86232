"""Configuration of the ``scopes`` plugin."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from portway.pipeline.plugin import PluginConfig


class ScopesConfig(PluginConfig):
    required: list[str] = Field(min_length=1, description="scopes to require")
    mode: Literal["all", "any"] = Field("all", description="need all of them, or any one")
    realm: str = Field("portway", description="realm named in WWW-Authenticate")

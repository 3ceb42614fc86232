"""Configuration of the ``acl`` plugin."""

from __future__ import annotations

from pydantic import Field, model_validator

from portway.pipeline.plugin import PluginConfig


class AclConfig(PluginConfig):
    allow: list[str] = Field(
        default_factory=list, description="if set, the consumer must be in one of these groups"
    )
    deny: list[str] = Field(
        default_factory=list, description="consumers in any of these groups are refused"
    )
    allow_anonymous: bool = Field(
        False, description="let the anonymous consumer through (its groups still apply)"
    )

    @model_validator(mode="after")
    def _some(self) -> AclConfig:
        if not self.allow and not self.deny:
            raise ValueError("give allow and/or deny groups")
        return self

"""Configuration of the ``auth`` combinator.

Members are plugin names or ``{name, config}`` objects::

    auth:
      any: [jwt, {name: key_auth, config: {headers: [x-api-key]}}]
      anonymous: guest
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from portway.pipeline.plugin import PluginConfig

MethodName = Literal["key_auth", "basic_auth", "jwt", "oauth2_introspection", "mtls_auth", "oidc"]


class MemberConfig(PluginConfig):
    name: MethodName = Field(description="an authentication plugin")
    config: dict[str, Any] = Field(default_factory=dict, description="that plugin's config")


def _members(v: Any) -> Any:
    if isinstance(v, list):
        return [{"name": m} if isinstance(m, str) else m for m in v]
    return v


class AuthConfig(PluginConfig):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    any_of: list[MemberConfig] | None = Field(
        None, alias="any", min_length=1, description="succeed with the first method that does"
    )
    all_of: list[MemberConfig] | None = Field(
        None, alias="all", min_length=1, description="every method must succeed"
    )
    anonymous: str | None = Field(
        None, description="consumer used when the request presents no credential at all"
    )

    _norm_any = field_validator("any_of", mode="before")(classmethod(lambda cls, v: _members(v)))
    _norm_all = field_validator("all_of", mode="before")(classmethod(lambda cls, v: _members(v)))

    @model_validator(mode="after")
    def _check(self) -> AuthConfig:
        if (self.any_of is None) == (self.all_of is None):
            raise ValueError("give exactly one of any or all")
        from portway.pipeline.registry import registry

        for i, m in enumerate(self.members):
            cls = registry.get(m.name)
            try:
                cls.Config.model_validate(m.config)
            except ValueError as e:
                raise ValueError(f"member {i} ({m.name}): {e}") from None
        return self

    @property
    def members(self) -> list[MemberConfig]:
        return self.any_of if self.any_of is not None else (self.all_of or [])

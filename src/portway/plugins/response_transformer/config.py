"""``response_transformer`` config."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, field_validator

from portway.pipeline.plugin import PluginConfig
from portway.plugins._json.rules import JsonRules
from portway.plugins._transform.headers import HeaderRules


class ResponseTransformerConfig(PluginConfig):
    """Edits to responses of the route: header edits, a JSON body rewrite, status mapping."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    headers: HeaderRules = Field(default_factory=HeaderRules, description="header edits")
    json_rules: JsonRules = Field(
        default_factory=JsonRules, alias="json", description="edits to a JSON response body"
    )
    status_map: dict[int, int] = Field(
        default_factory=dict, description='upstream status -> status sent, e.g. {"404": 410}'
    )

    @field_validator("status_map", mode="before")
    @classmethod
    def _statuses(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        for k, to in v.items():
            try:
                frm = int(k)
            except (TypeError, ValueError):
                raise ValueError(f"status_map key {k!r} is not a status code") from None
            if not 100 <= frm <= 599:
                raise ValueError(f"status_map key {k!r} is not a status code (100-599)")
            if isinstance(to, bool) or not isinstance(to, int) or not 200 <= to <= 599:
                raise ValueError(
                    f"status_map[{k!r}] = {to!r}: the new status must be a final status 200-599"
                )
        return v

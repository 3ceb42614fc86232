"""``request_transformer`` config."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from portway.pipeline.plugin import PluginConfig
from portway.plugins._json.rules import JsonRules
from portway.plugins._transform.headers import HeaderRules
from portway.plugins._transform.template import Template, compile_template


class QueryRules(PluginConfig):
    """Query edits: ``remove`` names first, then ``add`` (only names not already present);
    values may be templates."""

    add: dict[str, str] = Field(default_factory=dict, description="name -> value, when absent")
    remove: list[str] = Field(default_factory=list, description="argument names to delete")

    _tpl: dict[str, Template] = PrivateAttr(default_factory=dict)

    @field_validator("add", "remove")
    @classmethod
    def _names(cls, v: Any) -> Any:
        for name in v:
            if not name:
                raise ValueError("a query argument name cannot be empty")
        return v

    def model_post_init(self, context: Any, /) -> None:
        self._tpl = {k: compile_template(v) for k, v in self.add.items()}

    @property
    def empty(self) -> bool:
        return not (self.add or self.remove)


class RequestTransformerConfig(PluginConfig):
    """Edits to the request sent upstream (the client's request is never changed)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    headers: HeaderRules = Field(default_factory=HeaderRules, description="header edits")
    query: QueryRules = Field(default_factory=QueryRules, description="query edits")
    path: str | None = Field(
        None,
        description="upstream path template: {path}, {params.NAME}, {consumer.*}, {header.NAME}",
    )
    json_rules: JsonRules = Field(
        default_factory=JsonRules, alias="json", description="edits to a JSON request body"
    )

    _path: Template | None = PrivateAttr(None)

    @field_validator("path")
    @classmethod
    def _check_path(cls, v: str | None) -> str | None:
        if v is not None:
            if not v.startswith("/") and not v.startswith("{"):
                raise ValueError(f"path template {v!r} must start with '/' or a placeholder")
            if "?" in v or "#" in v:
                raise ValueError(f"path template {v!r}: use `query` for query arguments")
            compile_template(v)
        return v

    def model_post_init(self, context: Any, /) -> None:
        self._path = compile_template(self.path) if self.path is not None else None

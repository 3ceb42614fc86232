"""``request_validation`` config: a JSON Schema for the body, or an OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from portway.pipeline.plugin import PluginConfig
from portway.plugins.request_validation.openapi import OpenApiError, OpenApiSpec, load_openapi
from portway.plugins.request_validation.schema import SchemaError, compile_schema


class RequestValidationConfig(PluginConfig):
    """Exactly one of ``body_schema`` and ``openapi``. Schemas and documents are compiled
    when the config is loaded: an invalid schema or an unreadable document is a config error
    at that key."""

    on_fail: Literal["reject", "log"] = Field(
        "reject", description="reject: 400 listing every violation; log: log and forward"
    )
    validate_formats: bool = Field(
        False, description="assert `format` (email, date-time, uuid, ...) instead of annotating"
    )
    max_depth: int = Field(64, ge=1, le=512, description="deepest JSON nesting accepted (400)")
    body_schema: dict[str, Any] | bool | None = Field(
        None, description="JSON Schema 2020-12 for the JSON request body"
    )
    openapi: str | None = Field(
        None,
        description="OpenAPI 3.0/3.1 file (relative to the gateway's working directory): "
        "path params, query, headers and JSON body per operation",
    )

    _validator: Any = PrivateAttr(None)
    _spec: OpenApiSpec | None = PrivateAttr(None)

    @field_validator("body_schema")
    @classmethod
    def _compile_schema(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None:
            try:
                compile_schema(v, "2020-12", bool(info.data.get("validate_formats")))
            except SchemaError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("openapi")
    @classmethod
    def _load_openapi(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None:
            try:
                load_openapi(v, bool(info.data.get("validate_formats")))
            except OpenApiError as e:
                raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _one_source(self) -> RequestValidationConfig:
        if (self.body_schema is None) == (self.openapi is None):
            raise ValueError("set exactly one of `body_schema` and `openapi`")
        return self

    def model_post_init(self, context: Any, /) -> None:
        # both are cached by content: this reuses the compile done by the validators above
        if self.body_schema is not None:
            self._validator = compile_schema(self.body_schema, "2020-12", self.validate_formats)
        if self.openapi is not None:
            self._spec = load_openapi(self.openapi, self.validate_formats)

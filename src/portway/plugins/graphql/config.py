"""Config of the ``graphql`` plugin."""

from __future__ import annotations

import hashlib
import re

from graphql import GraphQLError, parse
from pydantic import Field, field_validator

from portway.config.types import Size
from portway.pipeline.plugin import PluginConfig

_SHA256: re.Pattern[str] = re.compile(r"^[0-9a-f]{64}$")


def operation_id(document: str) -> str:
    """The persisted id of a document: lower-case hex sha256 of its UTF-8 text (APQ's)."""
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


class GraphqlConfig(PluginConfig):
    """Limits enforced on every GraphQL operation before it reaches the upstream."""

    max_depth: int | None = Field(
        10, ge=1, description="deepest field nesting (fragments expanded); null = unlimited"
    )
    max_aliases: int | None = Field(
        30, ge=0, description="aliases in the operation (fragments expanded); null = unlimited"
    )
    max_cost: int | None = Field(
        None, ge=1, description="cost budget (see field_weights, list_size_arguments)"
    )
    field_weights: dict[str, int] = Field(
        default_factory=dict,
        description="cost of a field, by field name (there is no schema); default 1",
    )
    list_size_arguments: list[str] = Field(
        default_factory=lambda: ["first", "last", "limit"],
        description="an int argument of these names multiplies the cost of the field's children",
    )
    introspection: bool = Field(True, description="allow __schema and __type queries")
    persisted: list[str] | dict[str, str] = Field(
        default_factory=list,
        description="persisted operations: documents, or sha256 id -> document",
    )
    persisted_only: bool = Field(
        False, description="accept only operations of the persisted allow-list"
    )
    max_body_bytes: Size = Field(1024 * 1024, description="largest request body read (413)")
    max_tokens: int = Field(10_000, ge=1, description="parser token limit (parser DoS guard)")
    max_operation_labels: int = Field(
        100, ge=1, description="distinct operation names in metrics per binding; others 'other'"
    )

    @field_validator("persisted")
    @classmethod
    def _persisted(cls, v: list[str] | dict[str, str]) -> list[str] | dict[str, str]:
        items = v.items() if isinstance(v, dict) else ((None, d) for d in v)
        for i, (key, doc) in enumerate(items):
            where = f"persisted[{key if key is not None else i}]"
            try:
                parse(doc, no_location=True)
            except GraphQLError as e:
                raise ValueError(f"{where}: not a GraphQL document: {e.message}") from None
            if key is not None:
                if not _SHA256.match(key):
                    raise ValueError(f"{where}: an id is 64 lower-case hex digits (sha256)")
                if operation_id(doc) != key:
                    raise ValueError(f"{where}: the id is not the sha256 of the document")
        return v

    def persisted_map(self) -> dict[str, str]:
        p = self.persisted
        if isinstance(p, dict):
            return dict(p)
        return {operation_id(d): d for d in p}

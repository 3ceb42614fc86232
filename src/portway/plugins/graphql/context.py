"""What the ``graphql`` plugin tells later plugins (light: no graphql-core import)."""

from __future__ import annotations

from typing import Final

from portway.pipeline.context import ContextKey

#: the operation's name (``"anonymous"`` when it has none), set by the graphql plugin for
#: rate-limit keys (``key: [graphql_operation]``)
GRAPHQL_OPERATION: Final[ContextKey[str]] = ContextKey("graphql.operation")
#: the operation type: query, mutation or subscription
GRAPHQL_OPERATION_TYPE: Final[ContextKey[str]] = ContextKey("graphql.operation_type")

"""The ``graphql`` plugin: GraphQL awareness at the edge.

Per request (``on_request``, stage authz: after authentication, before rate limiting):

1. Read the operation: ``GET ?query=&operationName=&variables=&extensions=`` or ``POST`` with
   an ``application/json`` body (``{"query", "operationName", "variables", "extensions"}``)
   or an ``application/graphql`` body, read once through the bounded buffering helper (413
   beyond ``max_body_bytes``) and forwarded unchanged.
2. Persisted operations: ``extensions.persistedQuery.sha256Hash`` (APQ) selects a document
   of the allow-list (and is sent on with the document added when the client sent only the
   hash); a hash sent with a query must be that query's sha256. With ``persisted_only``,
   any operation outside the allow-list is refused.
3. Parse once (graphql-core, ``max_tokens``), select the operation (``operationName``, or
   the only one), refuse mutations over GET, then measure it with fragments expanded
   (:mod:`.analysis`): ``max_depth``, ``max_aliases``, ``max_cost``, and introspection
   (``__schema``/``__type``) when ``introspection: false``.
4. Expose the operation: ``ctx.state[GRAPHQL_OPERATION]`` (rate-limit key
   ``graphql_operation``) and ``ctx.extra["graphql_operation"]`` (access log, explain, the
   ``portway_graphql_operations`` counter; bounded to ``max_operation_labels`` names per
   binding, then ``other``).

Refusals are GraphQL responses: status 400, ``{"errors": [{"message": ..., "extensions":
{"code": ...}}]}``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    parse,
)

from portway.errors import GatewayError
from portway.http.headers import Headers
from portway.http.models import Response
from portway.pipeline.buffering import (
    BodyLimit,
    buffer_request_body,
    media_type,
    replace_request_body,
)
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins.graphql.analysis import AnalysisError, Analyzer
from portway.plugins.graphql.config import GraphqlConfig, operation_id
from portway.plugins.graphql.context import GRAPHQL_OPERATION, GRAPHQL_OPERATION_TYPE


class _Refused(Exception):
    def __init__(self, message: str, code: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def graphql_error(status: int, message: str, code: str) -> Response:
    body = orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})
    h = Headers()
    h.set("content-type", "application/json")
    return Response(status, h, body)


class GraphqlPlugin(Plugin[GraphqlConfig]):
    """Parses and limits GraphQL operations; see the module docstring for the contract."""

    name = "graphql"
    stage = Stage.authz
    Config = GraphqlConfig

    def __init__(self, config: GraphqlConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.persisted = config.persisted_map()
        self.weights = dict(config.field_weights)
        self.list_args = frozenset(config.list_size_arguments)
        self.limit = BodyLimit(env.settings)
        self.labels: set[str] = set()

    async def on_request(self, ctx: RequestContext) -> Response | None:
        try:
            self._check(await self._payload(ctx), ctx)
        except _Refused as r:
            ctx.extra["graphql_operation"] = "rejected"
            return graphql_error(r.status, r.message, r.code)
        return None

    # -- reading ----------------------------------------------------------------------------
    async def _payload(self, ctx: RequestContext) -> dict[str, Any]:
        req = ctx.request
        if req.method == "GET":
            q = dict(parse_qsl(req.query.decode("latin-1"), keep_blank_values=True))
            out: dict[str, Any] = {"query": q.get("query"), "operationName": q.get("operationName")}
            for key in ("variables", "extensions"):
                if q.get(key):
                    out[key] = _json(q[key], key)
            out["_get"] = True
            return out
        if req.method != "POST":
            raise _Refused("GraphQL requests use GET or POST", "METHOD_NOT_ALLOWED", 405)
        limit = min(self.config.max_body_bytes, self.limit.of(ctx))
        try:
            data = await buffer_request_body(ctx, limit)
        except GatewayError as e:
            raise _Refused(e.message, "BAD_REQUEST", e.status) from None
        if not data:
            raise _Refused("the request has no GraphQL body", "BAD_REQUEST")
        mt = media_type(req.headers.get_raw(b"content-type"))
        if mt == b"application/graphql":
            return {"query": data.decode("utf-8", "replace")}
        doc = _json(data, "body")
        if not isinstance(doc, dict):
            raise _Refused("a batched or non-object GraphQL body is not accepted", "BAD_REQUEST")
        return doc

    # -- checking ---------------------------------------------------------------------------
    def _check(self, payload: dict[str, Any], ctx: RequestContext) -> None:
        c = self.config
        query = payload.get("query")
        if query is not None and not isinstance(query, str):
            raise _Refused("query must be a string", "BAD_REQUEST")
        digest = _persisted_hash(payload.get("extensions"))
        if digest is not None:
            if query:
                if operation_id(query) != digest:
                    raise _Refused("provided sha does not match query", "BAD_REQUEST")
                if c.persisted_only and digest not in self.persisted:
                    raise _Refused("operation is not in the persisted allow-list", "NOT_ALLOWED")
            else:
                stored = self.persisted.get(digest)
                if stored is None:
                    raise _Refused("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")
                query = stored
                if not payload.get("_get"):
                    # the upstream need not know the allow-list: send it the document
                    body = {k: v for k, v in payload.items() if not k.startswith("_")}
                    body["query"] = stored
                    replace_request_body(ctx, orjson.dumps(body))
        elif not query:
            raise _Refused("no query in the request", "BAD_REQUEST")
        elif c.persisted_only and operation_id(query) not in self.persisted:
            raise _Refused("operation is not in the persisted allow-list", "NOT_ALLOWED")
        try:
            document = parse(query, no_location=True, max_tokens=c.max_tokens)
        except GraphQLError as e:
            raise _Refused(f"syntax error: {e.message}", "GRAPHQL_PARSE_FAILED") from None
        except RecursionError:
            # the parser is recursive: nesting beyond Python's stack is a bomb, not a bug
            raise _Refused("the document is nested too deeply", "DEPTH_LIMIT") from None
        op = _operation(document, payload.get("operationName"))
        if payload.get("_get") and op.operation != OperationType.QUERY:
            raise _Refused(f"a {op.operation.value} is not accepted over GET", "BAD_REQUEST", 405)
        variables = payload.get("variables")
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        analyzer = Analyzer(
            fragments,
            self.weights,
            self.list_args,
            variables if isinstance(variables, dict) else {},
        )
        try:
            m = analyzer.operation(op)
        except AnalysisError as e:
            raise _Refused(str(e), "GRAPHQL_VALIDATION_FAILED") from None
        except RecursionError:
            raise _Refused("the document is nested too deeply", "DEPTH_LIMIT") from None
        if not c.introspection and m.introspection:
            raise _Refused("introspection is disabled", "INTROSPECTION_DISABLED")
        if c.max_depth is not None and m.depth > c.max_depth:
            raise _Refused(
                f"query depth {m.depth} exceeds the maximum of {c.max_depth}", "DEPTH_LIMIT"
            )
        if c.max_aliases is not None and m.aliases > c.max_aliases:
            raise _Refused(
                f"{m.aliases} aliases exceed the maximum of {c.max_aliases}", "ALIAS_LIMIT"
            )
        if c.max_cost is not None and m.cost > c.max_cost:
            raise _Refused(f"query cost {m.cost} exceeds the maximum of {c.max_cost}", "COST_LIMIT")
        name = op.name.value if op.name is not None else "anonymous"
        ctx.state[GRAPHQL_OPERATION] = name
        ctx.state[GRAPHQL_OPERATION_TYPE] = op.operation.value
        ctx.extra["graphql_operation"] = self._label(name)
        ctx.extra["graphql"] = {"depth": m.depth, "aliases": m.aliases, "cost": m.cost}

    def _label(self, name: str) -> str:
        """A bounded metrics label: the first ``max_operation_labels`` names, then ``other``
        (operation names come from clients)."""
        if name in self.labels:
            return name
        if len(self.labels) < self.config.max_operation_labels:
            self.labels.add(name)
            return name
        return "other"


def _json(data: str | bytes, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _Refused(f"{what} is not valid JSON", "BAD_REQUEST") from None


def _persisted_hash(extensions: Any) -> str | None:
    if not isinstance(extensions, dict):
        return None
    pq = extensions.get("persistedQuery")
    if not isinstance(pq, dict):
        return None
    h = pq.get("sha256Hash")
    if not isinstance(h, str):
        raise _Refused("persistedQuery.sha256Hash must be a string", "BAD_REQUEST")
    return h.lower()


def _operation(document: DocumentNode, name: Any) -> OperationDefinitionNode:
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is not None and not isinstance(name, str):
        raise _Refused("operationName must be a string", "BAD_REQUEST")
    if name:
        for op in ops:
            if op.name is not None and op.name.value == name:
                return op
        raise _Refused(f"unknown operation named {name!r}", "BAD_REQUEST")
    if len(ops) != 1:
        raise _Refused(
            "operationName is required when the document holds several operations"
            if ops
            else "the document holds no operation",
            "BAD_REQUEST",
        )
    return ops[0]

"""The admin API's OpenAPI 3.1 document, generated from the config schema and the response
models so it cannot drift from what the API validates and returns."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import portway
from portway.admin import models as m
from portway.config.schema import ConsumerConfig, GatewayConfig

REF = "#/components/schemas/{model}"
CREDENTIAL_KINDS = ("key_auth", "basic_auth", "jwt", "mtls")
#: media types accepted for configuration documents (JSON is a subset of YAML)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")

_MODELS: tuple[type[BaseModel], ...] = (
    GatewayConfig,
    ConsumerConfig,
    m.ErrorBody,
    m.StatusBody,
    m.ApplyResult,
    m.ValidateResult,
    m.RouteList,
    m.UpstreamList,
    m.UpstreamState,
    m.DrainResult,
    m.ConsumerView,
    m.ConsumerList,
    m.CredentialList,
    m.CreatedCredential,
    m.PurgeResult,
    m.ConsumerInput,
    m.ConsumerUpdate,
)


def _ref(model: type[BaseModel] | str) -> dict[str, str]:
    name = model if isinstance(model, str) else model.__name__
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_ERRORS = {
    400: "malformed request (bad JSON or YAML)",
    401: "missing or wrong bearer token",
    404: "no such resource",
    409: "conflict with the current state",
    413: "body too large",
    415: "unsupported media type",
    422: "semantically invalid (configuration errors listed in `errors`)",
    503: "the feature is not running in this process",
}


def _op(
    op_id: str,
    summary: str,
    ok: Mapping[int, tuple[str, Mapping[str, Any] | None]],
    errors: tuple[int, ...] = (),
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    tag: str = "gateway",
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for code, (desc, schema) in ok.items():
        r: dict[str, Any] = {"description": desc}
        if schema is not None:
            r["content"] = _json(dict(schema))
        responses[str(code)] = r
    for code in sorted({401, *errors}):
        responses[str(code)] = {"description": _ERRORS[code], "content": _json(_ref(m.ErrorBody))}
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "responses": responses,
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


#: a path segment that names something: not "." nor "..", which RFC 3986 removes from a
#: path before it is routed (``/consumers/.`` is ``/consumers/``)
_SEGMENT: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": r"^(?:.*[^.].*|\.{3,})$"}


def _path_param(name: str, desc: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": desc,
        "schema": schema or _SEGMENT,
    }


_WRITE_BACK = {
    "name": "write_back",
    "in": "query",
    "required": False,
    "description": "rewrite the config file (default: admin.write_back)",
    "schema": {"type": "boolean"},
}


def _config_body() -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": _ref(GatewayConfig)}}
    for t in YAML_TYPES:
        # the document is YAML text; its structure is the same schema as the JSON form
        content[t] = {"schema": _ref(GatewayConfig)}
    return {"required": True, "content": content}


def _json_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": _json(schema)}


def _paths() -> dict[str, Any]:
    user = _path_param("username", "consumer username")
    name = _path_param("name", "route name")
    up = _path_param("name", "upstream name")
    target = _path_param("target", "target id (host:port)")
    kind = _path_param(
        "kind", "credential kind", {"type": "string", "enum": list(CREDENTIAL_KINDS)}
    )
    cred_id = _path_param("id", "credential id", {"type": "string", "pattern": "^[0-9a-f]{16}$"})
    ok_config = {200: ("applied", _ref(m.ApplyResult))}
    cfg_errors = (400, 409, 413, 415, 422)
    return {
        "/status": {
            "get": _op(
                "getStatus",
                "Version, uptime, workers, config hash, last reload",
                {200: ("status", _ref(m.StatusBody))},
            )
        },
        "/config": {
            "get": _op(
                "getConfig",
                "The effective configuration, secrets redacted",
                {200: ("configuration", _ref(GatewayConfig))},
            ),
            "put": _op(
                "putConfig",
                "Validate and apply a whole configuration (YAML or JSON)",
                ok_config,
                cfg_errors,
                params=[_WRITE_BACK],
                body=_config_body(),
            ),
        },
        "/config/validate": {
            "post": _op(
                "validateConfig",
                "Validate a configuration without applying it",
                {200: ("valid", _ref(m.ValidateResult))},
                (400, 413, 415, 422),
                body=_config_body(),
            ),
        },
        "/reload": {
            "post": _op("reload", "Re-read the config file and apply it", ok_config, (409, 422)),
        },
        "/routes": {
            "get": _op(
                "listRoutes",
                "Routes in matching priority order",
                {200: ("routes", _ref(m.RouteList))},
                tag="routes",
            )
        },
        "/routes/{name}": {
            "get": _op(
                "getRoute",
                "One route's configuration",
                {200: ("route", _ref("RouteConfig"))},
                (404,),
                params=[name],
                tag="routes",
            )
        },
        "/upstreams": {
            "get": _op(
                "listUpstreams",
                "Upstreams with target health, breaker, load and latency",
                {200: ("upstreams", _ref(m.UpstreamList))},
                tag="upstreams",
            )
        },
        "/upstreams/{name}": {
            "get": _op(
                "getUpstream",
                "One upstream's live state",
                {200: ("upstream", _ref(m.UpstreamState))},
                (404,),
                params=[up],
                tag="upstreams",
            )
        },
        "/upstreams/{name}/targets/{target}/drain": {
            "post": _op(
                "drainTarget",
                "Stop sending new requests to a target (this process)",
                {200: ("draining", _ref(m.DrainResult))},
                (404,),
                params=[up, target],
                tag="upstreams",
            ),
            "delete": _op(
                "undrainTarget",
                "Send requests to a drained target again",
                {200: ("not draining", _ref(m.DrainResult))},
                (404,),
                params=[up, target],
                tag="upstreams",
            ),
        },
        "/consumers": {
            "get": _op(
                "listConsumers",
                "Consumers, credentials redacted",
                {200: ("consumers", _ref(m.ConsumerList))},
                tag="consumers",
            ),
            "post": _op(
                "createConsumer",
                "Add a consumer (persisted into the config)",
                {201: ("created", _ref(m.ConsumerView))},
                (400, 409, 413, 415, 422),
                body=_json_body(_ref(m.ConsumerInput)),
                tag="consumers",
            ),
        },
        "/consumers/{username}": {
            "get": _op(
                "getConsumer",
                "One consumer, credentials redacted",
                {200: ("consumer", _ref(m.ConsumerView))},
                (404,),
                params=[user],
                tag="consumers",
            ),
            "put": _op(
                "putConsumer",
                "Create or replace a consumer",
                {200: ("replaced", _ref(m.ConsumerView)), 201: ("created", _ref(m.ConsumerView))},
                (400, 409, 413, 415, 422),
                params=[user],
                body=_json_body(_ref(m.ConsumerUpdate)),
                tag="consumers",
            ),
            "delete": _op(
                "deleteConsumer",
                "Remove a consumer",
                {204: ("deleted", None)},
                (404, 409, 422),
                params=[user],
                tag="consumers",
            ),
        },
        "/consumers/{username}/credentials": {
            "get": _op(
                "listCredentials",
                "A consumer's credentials, redacted",
                {200: ("credentials", _ref(m.CredentialList))},
                (404,),
                params=[user],
                tag="consumers",
            ),
        },
        "/consumers/{username}/credentials/{kind}": {
            "post": _op(
                "addCredential",
                "Add a credential; key_auth without `key` gets a generated key "
                "(returned once); clear keys and passwords are stored hashed",
                {201: ("created", _ref(m.CreatedCredential))},
                (400, 404, 409, 413, 415, 422),
                params=[user, kind],
                body=_json_body({"type": "object"}, required=False),
                tag="consumers",
            ),
        },
        "/consumers/{username}/credentials/{kind}/{id}": {
            "delete": _op(
                "deleteCredential",
                "Remove one credential",
                {204: ("deleted", None)},
                (404, 409, 422),
                params=[user, kind, cred_id],
                tag="consumers",
            ),
        },
        "/cache": {
            "delete": _op(
                "purgeCache",
                "Purge every response cache in this process, or one route's (?route=NAME)",
                {200: ("purged", _ref(m.PurgeResult))},
                (400, 503),
                params=[
                    {
                        "name": "route",
                        "in": "query",
                        "required": False,
                        "description": "purge only what this route cached",
                        "schema": {"type": "string", "minLength": 1},
                    }
                ],
                tag="cache",
            ),
        },
        "/cache/{key}": {
            "delete": _op(
                "purgeCacheKey",
                "Purge one cache key (as shown in X-Cache-Key)",
                {200: ("purged", _ref(m.PurgeResult))},
                (404, 503),
                params=[
                    _path_param(
                        "key", "cache key as in X-Cache-Key; its '/' may be sent as is or as %2F"
                    )
                ],
                tag="cache",
            ),
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Prometheus metrics (text format, or OpenMetrics when accepted)",
                "tags": ["observability"],
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    },
                    "401": {"description": _ERRORS[401], "content": _json(_ref(m.ErrorBody))},
                    "503": {"description": _ERRORS[503], "content": _json(_ref(m.ErrorBody))},
                },
            }
        },
        "/openapi.json": {
            "get": _op(
                "getOpenApi",
                "This document",
                {200: ("OpenAPI 3.1", {"type": "object"})},
                tag="observability",
            )
        },
    }


@lru_cache(maxsize=1)
def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; treat as read-only)."""
    _, defs = models_json_schema([(model, "validation") for model in _MODELS], ref_template=REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Portway admin API",
            "version": portway.__version__,
            "description": "Operate a running Portway gateway. Every call needs "
            "`Authorization: Bearer <admin.token>` unless the listener is on loopback with "
            "`admin.auth: false`. Errors use the gateway's JSON error format.",
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }

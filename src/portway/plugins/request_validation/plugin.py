"""``request_validation``: check requests against a JSON Schema or an OpenAPI document.

``body_schema`` validates the JSON body of requests that carry one (POST/PUT/PATCH without a
body are refused: the schema describes a body they must send). ``openapi`` finds the
request's operation and validates its path parameters, query arguments, headers and JSON
body. The body is read through :mod:`portway.pipeline.buffering` (never more than the route's
``max_body_bytes``: 413) and forwarded as read. Outcomes:

- 413 body too large; 415 a body whose Content-Type is not JSON (or not one the operation
  declares); 400 ``invalid_json`` for a body that does not parse or nests deeper than
  ``max_depth``;
- 400 ``validation_failed`` with ``violations``: every violation, each with ``in`` (body,
  path, query, header), ``pointer`` (RFC 6901, inside that value), ``message``, ``keyword``
  and ``name`` for parameters. With ``on_fail: log`` violations are logged and the request
  goes on, and so do 415 and invalid JSON (logged); 413 is always answered (a body over the
  limit was not read whole and cannot be forwarded).
"""

from __future__ import annotations

import logging
from typing import Any, Final

import orjson

from portway.errors import BadRequestError, GatewayError, error_body
from portway.http.models import Response
from portway.pipeline.buffering import BodyLimit, buffer_request_body, is_json, media_type
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins.request_validation.config import RequestValidationConfig
from portway.plugins.request_validation.openapi import body_schema_for, check_params
from portway.plugins.request_validation.schema import Violation, depth_exceeds, violations

log: Final = logging.getLogger("portway.plugins")

_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
#: at most this many violations in a 400 (a huge array of bad items must not make a huge
#: answer); ``truncated`` tells the client there were more
MAX_REPORTED: Final = 100


class UnsupportedMediaTypeError(GatewayError):
    status = 415
    code = "unsupported_media_type"


class InvalidJsonError(BadRequestError):
    code = "invalid_json"


class ValidationFailedError(BadRequestError):
    """400 whose body lists the violations."""

    code = "validation_failed"

    def __init__(self, found: list[Violation]) -> None:
        super().__init__(f"request validation failed ({len(found)} violations)")
        self.violations = found

    def body(self, request_id: str | None) -> bytes:
        base = orjson.loads(error_body(self.status, self.message, self.code, request_id))
        base["violations"] = self.violations[:MAX_REPORTED]
        if len(self.violations) > MAX_REPORTED:
            base["truncated"] = True
        return orjson.dumps(base)


class RequestValidationPlugin(Plugin[RequestValidationConfig]):
    """See the module docstring (Kong request-validator / APISIX request-validation)."""

    name = "request_validation"
    stage = Stage.transform
    Config = RequestValidationConfig

    def __init__(self, config: RequestValidationConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.limit = BodyLimit(env.settings)
        self.reject = config.on_fail == "reject"

    async def on_request(self, ctx: RequestContext) -> Response | None:
        try:
            found = await self._check(ctx)
        except GatewayError as e:
            if self.reject or not isinstance(e, UnsupportedMediaTypeError | InvalidJsonError):
                raise
            log.warning("request_validation: %s: %s (on_fail: log)", ctx.route_name, e.message)
            return None
        if found:
            if self.reject:
                raise ValidationFailedError(found)
            log.warning(
                "request_validation: %s %s: %d violations (on_fail: log): %s",
                ctx.request.method,
                ctx.request.path,
                len(found),
                orjson.dumps(found[:10]).decode(),
            )
        return None

    async def _check(self, ctx: RequestContext) -> list[Violation]:
        spec = self.config._spec
        if spec is None:
            return await self._body(ctx, self.config._validator, required=None)
        req = ctx.request
        op, path_params, known = spec.find(req.method, req.path)
        if op is None:
            what = "method" if known else "path"
            return [
                {
                    "in": "path",
                    "pointer": "",
                    "message": f"no operation for {req.method} {req.path} in the API description",
                    "keyword": what,
                }
            ]
        found = check_params(op, path_params, req.query, req.headers)
        if op.body is None:
            return found
        found.extend(await self._body(ctx, None, required=op.body.required, operation=op.body))
        return found

    async def _body(
        self, ctx: RequestContext, validator: Any, required: bool | None, operation: Any = None
    ) -> list[Violation]:
        ureq = ctx.upstream_request
        if ureq.body is None or ureq.content_length == 0:
            return self._missing(ctx, required)
        mt = media_type(ureq.headers.get_raw(b"content-type")).decode("latin-1")
        if operation is not None:
            declared, validator = body_schema_for(operation, mt)
            if not declared:
                raise UnsupportedMediaTypeError(
                    f"content type {mt or '(none)'!r} is not accepted by this operation"
                )
            if not is_json(mt.encode("latin-1")):
                return []  # a declared non-JSON type: not validated (streams on)
        elif not is_json(mt.encode("latin-1")):
            raise UnsupportedMediaTypeError(
                f"content type {mt or '(none)'!r} is not JSON (application/json expected)"
            )
        data = await buffer_request_body(ctx, self.limit.of(ctx))
        if not data:  # an empty chunked body
            return self._missing(ctx, required)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise InvalidJsonError(f"request body is not valid JSON: {e}") from None
        if depth_exceeds(doc, self.config.max_depth):
            raise InvalidJsonError(f"request body nests deeper than {self.config.max_depth} levels")
        if validator is None:
            return []
        return violations(validator, doc, "body")

    @staticmethod
    def _missing(ctx: RequestContext, required: bool | None) -> list[Violation]:
        if required is None:
            required = ctx.request.method in _BODY_METHODS
        if not required:
            return []
        return [
            {
                "in": "body",
                "pointer": "",
                "message": "a request body is required",
                "keyword": "required",
            }
        ]

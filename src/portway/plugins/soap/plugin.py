"""``soap``: JSON clients to a SOAP service.

``on_request`` reads the JSON object (body, or query parameters when there is no body),
fills the ``request_template`` (values XML-escaped; a missing field is a 400) and sends the
envelope with ``POST``, the SOAP content type and the action (``SOAPAction`` for 1.1, the
``action`` parameter for 1.2).

``on_response`` (``response: json``) parses the answer with DTDs and entities refused
(:mod:`.xml`) and returns the Body's content as JSON with status 200, or a Fault as
``{"fault": {"code", "message", "detail"}}`` with 400 (Client/Sender faults) or 502. A reply
that is not XML is relayed as it came; one that does not parse is a 502.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl

import orjson

from portway.errors import BadRequestError, GatewayError
from portway.pipeline.buffering import (
    buffer_request_body,
    buffer_response_body,
    replace_request_body,
    replace_response_body,
)
from portway.pipeline.context import ContextKey, RequestContext
from portway.pipeline.plugin import Plugin, PluginEnv, Stage
from portway.plugins.soap.config import SoapConfig
from portway.plugins.soap.xml import SoapParseError, fill, read_envelope

_ACTIVE: Final[ContextKey[bool]] = ContextKey("soap.active")


class SoapPlugin(Plugin[SoapConfig]):
    """See the module docstring."""

    name = "soap"
    stage = Stage.transform
    Config = SoapConfig

    def __init__(self, config: SoapConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        action = config.action.encode("ascii")
        if config.soap_version == "1.1":
            self._headers = [
                (b"content-type", b"text/xml; charset=utf-8"),
                (b"soapaction", b'"' + action + b'"'),
            ]
        else:
            self._headers = [
                (b"content-type", b'application/soap+xml; charset=utf-8; action="' + action + b'"')
            ]

    async def on_request(self, ctx: RequestContext) -> None:
        req = ctx.request
        limit = self.config.max_body_bytes
        raw = await buffer_request_body(ctx, limit) if req.body is not None else None
        if raw:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as e:
                raise BadRequestError(f"request body is not JSON: {e}") from None
            if not isinstance(data, dict):
                raise BadRequestError("request body must be a JSON object")
        else:
            data = dict(parse_qsl(req.query.decode("latin-1"), keep_blank_values=True))
        try:
            envelope = fill(self.config.template, data)
        except KeyError as e:
            raise BadRequestError(f"missing field {e.args[0]!r}") from None
        except TypeError as e:
            raise BadRequestError(f"field {e.args[0]!r} must be a scalar") from None
        ureq = ctx.upstream_request
        ureq.method = "POST"
        ureq.query = b""
        h = ureq.headers
        h.remove_many((b"content-type", b"soapaction", b"accept-encoding", b"accept"))
        for k, v in self._headers:
            h.add_raw(k, v)
        replace_request_body(ctx, b'<?xml version="1.0" encoding="utf-8"?>' + envelope.encode())
        ctx.state[_ACTIVE] = True
        return None

    async def on_response(self, ctx: RequestContext) -> None:
        resp = ctx.response
        if self.config.response != "json" or resp is None or not resp.upstream:
            return
        if not ctx.state.get(_ACTIVE):
            return
        ct = (resp.headers.get_raw(b"content-type") or b"").lower()
        if b"xml" not in ct:
            return  # not a SOAP answer (an HTML error page, ...): as it came
        data = await buffer_response_body(ctx, self.config.max_body_bytes)
        try:
            fault, doc = read_envelope(data)
        except SoapParseError as e:
            raise GatewayError(str(e), status=502, code="bad_soap_response") from None
        if fault:
            code = str(doc.get("code", ""))
            client = code.endswith(("Client", "Sender"))
            resp.status = 400 if client else 502
            out = orjson.dumps({"fault": doc})
        else:
            resp.status = 200
            out = orjson.dumps(doc)
        resp.reason = b""
        resp.headers.remove_many((b"content-type", b"content-length"))
        resp.headers.add_raw(b"content-type", b"application/json")
        replace_response_body(resp, out)

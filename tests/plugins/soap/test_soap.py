"""soap: JSON → SOAP envelope (escaped) → a real HTTP upstream → JSON; Faults; XXE and
entity bombs refused; template errors at config load with their line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from portway.config.loader import ConfigError, load_config_text
from portway.http.client import simple_request
from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import run_gateway, run_upstream

NS = "http://schemas.xmlsoap.org/soap/envelope/"
TEMPLATE = '<q:GetQuote xmlns:q="urn:quotes"><q:symbol>{{symbol}}</q:symbol><q:day>{{when.day}}</q:day></q:GetQuote>'


def envelope(body: str) -> bytes:
    return (
        f'<?xml version="1.0"?><soap:Envelope xmlns:soap="{NS}"><soap:Body>{body}'
        "</soap:Body></soap:Envelope>"
    ).encode()


OK = envelope(
    '<r:GetQuoteResponse xmlns:r="urn:quotes"><r:price>12.5</r:price>'
    "<r:history>1</r:history><r:history>2</r:history></r:GetQuoteResponse>"
)
FAULT = envelope(
    "<soap:Fault><faultcode>soap:Client</faultcode><faultstring>unknown symbol</faultstring>"
    "<detail><code>42</code></detail></soap:Fault>"
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    + envelope("<a>&x;</a>")[21:]
)
BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
    + envelope("<a>&b;</a>")[21:]
)


def config(url: str, template: Path, **extra: Any) -> dict[str, Any]:
    conf = {"action": "urn:GetQuote", "request_template": str(template), "response": "json"}
    conf.update(extra)
    return {
        "upstreams": {"legacy": {"targets": [{"url": url}]}},
        "routes": [
            {
                "name": "legacy-soap",
                "match": {"paths": ["/soap/quote"]},
                "upstream": "legacy",
                "plugins": [{"name": "soap", "config": conf}],
            }
        ],
    }


@pytest.fixture
def template(tmp_path: Path) -> Path:
    p = tmp_path / "quote.xml"
    p.write_text(TEMPLATE)
    return p


def upstream(answer: bytes, status: int = 200) -> Any:
    async def handler(req: Request) -> Response:
        if req.body is not None:
            await req.body.read_all()
        return Response(status, Headers([(b"content-type", b"text/xml; charset=utf-8")]), answer)

    return handler


async def post(url: str, data: Any) -> tuple[int, Any]:
    r = await simple_request(
        "POST", url, body=orjson.dumps(data), headers=[("content-type", "application/json")]
    )
    return r.status, orjson.loads(r.body)


async def test_json_to_escaped_envelope_and_response_to_json(template: Path) -> None:
    async with run_upstream(upstream(OK)) as up, run_gateway(config(up.url, template)) as gw:
        status, body = await post(
            gw.url + "/soap/quote", {"symbol": 'A&B <"x">', "when": {"day": 3}}
        )
        sent = up.requests[-1]
    assert status == 200
    assert body == {"GetQuoteResponse": {"price": "12.5", "history": ["1", "2"]}}
    assert sent.method == "POST"
    assert sent.headers.get("soapaction") == '"urn:GetQuote"'
    assert sent.headers.get("content-type") == "text/xml; charset=utf-8"


async def test_envelope_bytes_sent(template: Path) -> None:
    seen: list[bytes] = []

    async def handler(req: Request) -> Response:
        assert req.body is not None
        seen.append(await req.body.read_all())
        return Response(200, Headers([(b"content-type", b"text/xml")]), OK)

    async with run_upstream(handler) as up, run_gateway(config(up.url, template)) as gw:
        await post(gw.url + "/soap/quote", {"symbol": "<b>&'", "when": {"day": True}})
    assert seen == [
        b'<?xml version="1.0" encoding="utf-8"?>'
        b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
        b'<q:GetQuote xmlns:q="urn:quotes"><q:symbol>&lt;b&gt;&amp;&apos;</q:symbol>'
        b"<q:day>true</q:day></q:GetQuote></soap:Body></soap:Envelope>"
    ]


async def test_fault_to_json(template: Path) -> None:
    async with (
        run_upstream(upstream(FAULT, 500)) as up,
        run_gateway(config(up.url, template)) as gw,
    ):
        status, body = await post(gw.url + "/soap/quote", {"symbol": "X", "when": {"day": 1}})
    assert status == 400  # a Client fault
    assert body == {
        "fault": {"code": "soap:Client", "message": "unknown symbol", "detail": {"code": "42"}}
    }


@pytest.mark.parametrize("doc", [XXE, BOMB], ids=["xxe", "entity-bomb"])
async def test_dtd_and_entities_are_refused(template: Path, doc: bytes) -> None:
    async with run_upstream(upstream(doc)) as up, run_gateway(config(up.url, template)) as gw:
        r = await simple_request(
            "POST",
            gw.url + "/soap/quote",
            body=b'{"symbol": "X", "when": {"day": 1}}',
            headers=[("content-type", "application/json")],
        )
    assert r.status == 502
    assert b"root:" not in r.body and b"aaaa" not in r.body
    assert orjson.loads(r.body)["code"] == "bad_soap_response"


async def test_missing_field_and_bad_json_are_400(template: Path) -> None:
    async with run_upstream(upstream(OK)) as up, run_gateway(config(up.url, template)) as gw:
        status, body = await post(gw.url + "/soap/quote", {"symbol": "X"})
        assert status == 400 and "when.day" in body["error"]
        r = await simple_request(
            "POST",
            gw.url + "/soap/quote",
            body=b"{nope",
            headers=[("content-type", "application/json")],
        )
        assert r.status == 400
    assert up.requests == []


def test_bad_template_is_a_config_error_with_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<a><b></a>")
    text = f"""\
upstreams:
  legacy: {{targets: [{{url: http://127.0.0.1:1}}]}}
routes:
  - name: s
    match: {{paths: ["/soap/quote"]}}
    upstream: legacy
    plugins:
      - name: soap
        config: {{action: "urn:GetQuote", request_template: {bad}, response: json}}
"""
    with pytest.raises(ConfigError) as ei:
        load_config_text(text)
    assert "request_template" in str(ei.value)
    assert "line 9" in str(ei.value) or ":9" in str(ei.value)

"""``request_validation`` with ``body_schema`` through a real gateway and a real upstream:
every JSON Schema keyword family, the 400 listing every violation with its JSON pointer, and
the 4xx for bodies that are not JSON, too deep or too large (never a 500)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from portway.http.client import simple_request
from tests.helpers import run_gateway, run_upstream, simple_config

JSON = [("content-type", "application/json")]


def _cfg(url: str, schema: Any, route: dict[str, Any] | None = None, **conf: Any) -> dict[str, Any]:
    plugin = {"name": "request_validation", "config": {"body_schema": schema, **conf}}
    return simple_config(url, plugins=[plugin], **(route or {}))


async def _post(
    schema: Any, bodies: list[Any], headers: list[tuple[str, str]] = JSON, **extra: Any
) -> list[tuple[int, Any, int]]:
    """POST each body; (status, parsed answer, requests the upstream saw so far)."""
    out = []
    async with run_upstream() as up:
        async with run_gateway(_cfg(up.url, schema, **extra)) as gw:
            for b in bodies:
                raw = b if isinstance(b, bytes) else orjson.dumps(b)
                r = await simple_request("POST", gw.url + "/x", headers=headers, body=raw)
                out.append((r.status, orjson.loads(r.body), len(up.requests)))
    return out


def _pointers(answer: Any) -> list[tuple[str, str]]:
    return sorted((v["pointer"], v["keyword"]) for v in answer["violations"])


# (schema, a valid body, an invalid body, the (pointer, keyword) pairs it violates)
FAMILIES: dict[str, tuple[Any, Any, Any, list[tuple[str, str]]]] = {
    "type": ({"type": "object"}, {}, [1], [("", "type")]),
    "required": (
        {"type": "object", "required": ["name", "id"]},
        {"name": "a", "id": 1},
        {"other": 1},
        [("", "required"), ("", "required")],
    ),
    "properties": (
        {"properties": {"name": {"type": "string"}, "age": {"type": "integer"}}},
        {"name": "a", "age": 3},
        {"name": 5, "age": "x"},
        [("/age", "type"), ("/name", "type")],
    ),
    "additionalProperties": (
        {"properties": {"a": {}}, "additionalProperties": False},
        {"a": 1},
        {"a": 1, "b": 2},
        [("", "additionalProperties")],
    ),
    "enum/const": (
        {"properties": {"color": {"enum": ["red", "blue"]}, "v": {"const": 2}}},
        {"color": "red", "v": 2},
        {"color": "green", "v": 3},
        [("/color", "enum"), ("/v", "const")],
    ),
    "numeric limits": (
        {
            "properties": {
                "n": {"minimum": 1, "maximum": 10},
                "e": {"exclusiveMinimum": 0},
                "m": {"multipleOf": 5},
            }
        },
        {"n": 10, "e": 0.5, "m": 15},
        {"n": 11, "e": 0, "m": 7},
        [("/e", "exclusiveMinimum"), ("/m", "multipleOf"), ("/n", "maximum")],
    ),
    "string limits + pattern": (
        {
            "properties": {
                "s": {"minLength": 2, "maxLength": 4},
                "code": {"pattern": "^[A-Z]{3}$"},
            }
        },
        {"s": "abc", "code": "EUR"},
        {"s": "a", "code": "eur"},
        [("/code", "pattern"), ("/s", "minLength")],
    ),
    "arrays": (
        {
            "properties": {
                "tags": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "uniqueItems": True,
                },
                "few": {"maxItems": 1},
                "some": {"minItems": 2, "contains": {"const": 0}},
            }
        },
        {"tags": ["a", "b"], "few": [1], "some": [0, 1]},
        {"tags": ["a", 2, "a"], "few": [1, 2], "some": [1]},
        [
            ("/few", "maxItems"),
            ("/some", "contains"),
            ("/some", "minItems"),
            ("/tags", "uniqueItems"),
            ("/tags/1", "type"),
        ],
    ),
    "oneOf/anyOf/allOf": (
        {
            "properties": {
                "one": {"oneOf": [{"type": "integer"}, {"minimum": 0}]},
                "any": {"anyOf": [{"type": "string"}, {"type": "boolean"}]},
                "all": {"allOf": [{"type": "integer"}, {"minimum": 5}]},
            }
        },
        {"one": -1, "any": True, "all": 7},
        {"one": 3, "any": 1, "all": 2},
        [("/all", "minimum"), ("/any", "anyOf"), ("/one", "oneOf")],
    ),
    "$ref/$defs": (
        {
            "$defs": {"item": {"type": "object", "required": ["sku"]}},
            "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/item"}}},
        },
        {"items": [{"sku": "a"}]},
        {"items": [{"sku": "a"}, {}, {"x": 1}]},
        [("/items/1", "required"), ("/items/2", "required")],
    ),
}


@pytest.mark.parametrize("family", list(FAMILIES))
async def test_keyword_family(family: str) -> None:
    schema, good, bad, expected = FAMILIES[family]
    (s1, a1, n1), (s2, a2, n2) = await _post(schema, [good, bad])
    assert s1 == 200 and n1 == 1
    assert orjson.loads(a1["body"]) == good  # forwarded as sent
    assert s2 == 400 and n2 == 1  # never reached the upstream
    assert a2["code"] == "validation_failed" and a2["status"] == 400
    assert _pointers(a2) == sorted(expected), a2
    assert all(v["in"] == "body" and v["message"] for v in a2["violations"])


async def test_format_asserted_only_when_enabled() -> None:
    schema = {"properties": {"mail": {"format": "email"}, "at": {"format": "date-time"}}}
    bad = {"mail": "not-an-email", "at": "yesterday"}
    [(off, _, _)] = await _post(schema, [bad])
    assert off == 200  # 2020-12: format is an annotation by default
    [(on, answer, _)] = await _post(schema, [bad], validate_formats=True)
    assert on == 400 and _pointers(answer) == [("/at", "format"), ("/mail", "format")]


async def test_not_json_too_deep_wrong_type_and_missing_body_are_clear_4xx() -> None:
    schema = {"type": "object"}
    deep = b'{"a":' * 70 + b"1" + b"}" * 70
    results = await _post(schema, [b"{not json", deep, b"[1, 2"])
    assert [(s, a["code"]) for s, a, _ in results] == [
        (400, "invalid_json"),
        (400, "invalid_json"),
        (400, "invalid_json"),
    ]
    assert "deeper than 64" in results[1][1]["error"]
    [(s, a, n)] = await _post(schema, [b"name=x"], headers=[("content-type", "text/plain")])
    assert (s, a["code"], n) == (415, "unsupported_media_type", 0)
    async with run_upstream() as up:
        async with run_gateway(_cfg(up.url, schema)) as gw:
            r = await simple_request("POST", gw.url + "/x")  # Content-Length: 0
            g = await simple_request("GET", gw.url + "/x")
    assert r.status == 400 and orjson.loads(r.body)["violations"][0]["keyword"] == "required"
    assert g.status == 200  # a GET carries no body to validate


async def test_oversize_body_is_413_and_never_buffered_past_the_limit() -> None:
    schema = {"type": "object"}
    big = orjson.dumps({"pad": "x" * 5000})
    [(s, a, n)] = await _post(schema, [big], route={"max_body_bytes": 1024})
    assert (s, a["code"], n) == (413, "payload_too_large", 0)
    # chunked (no Content-Length): the limit is enforced while reading
    async with run_upstream() as up:
        cfg = _cfg(up.url, schema)
        cfg["server"] = {"limits": {"max_body_bytes": 2048}}
        async with run_gateway(cfg) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            head = (
                b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            writer.write(head + b"".join(b"400\r\n" + b" " * 1024 + b"\r\n" for _ in range(4)))
            await writer.drain()
            answer = await reader.readuntil(b"\r\n\r\n")
            writer.close()
        assert answer.startswith(b"HTTP/1.1 413"), answer
        assert not up.requests


async def test_every_violation_listed_and_log_mode_forwards() -> None:
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
    }
    bad = {"items": ["a", 1, "b", None]}
    [(s, a, _)] = await _post(schema, [bad])
    assert s == 400
    assert [v["pointer"] for v in a["violations"]] == ["/items/0", "/items/2", "/items/3"]
    [(s2, echo, n)] = await _post(schema, [bad], on_fail="log")
    assert s2 == 200 and n == 1 and orjson.loads(echo["body"]) == bad
    [(s3, _, n3)] = await _post(schema, [b"{oops"], on_fail="log")
    assert s3 == 200 and n3 == 1  # log mode forwards an unparsable body too


async def test_expect_100_continue_is_answered_before_reading() -> None:
    async with run_upstream() as up:
        async with run_gateway(_cfg(up.url, {"required": ["a"]})) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(
                b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                b"Content-Length: 7\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b'{"a":1}')
            rest = await asyncio.wait_for(reader.read(), 5)
            writer.close()
    assert rest.startswith(b"HTTP/1.1 200")
    assert b"100 Continue" not in rest  # the forwarder did not send a second one
    assert up.requests[0].headers.get("expect") is None


async def test_violations_are_capped_and_marked_truncated() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    [(s, a, _)] = await _post(schema, [["x"] * 150])
    assert s == 400 and len(a["violations"]) == 100 and a["truncated"] is True
    assert a["error"] == "request validation failed (150 violations)"


async def test_empty_chunked_body_counts_as_missing() -> None:
    async with run_upstream() as up:
        async with run_gateway(_cfg(up.url, {"type": "object"})) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(
                b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
            )
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
    assert answer.startswith(b"HTTP/1.1 400")
    assert b'"keyword":"required"' in answer and not up.requests

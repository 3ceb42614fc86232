"""``request_transformer`` through a real gateway and upstream: header order (remove, rename,
replace, add, append), templates, query edits, the path template (with strip_prefix and
retries), JSON body rewrites with an exact Content-Length, non-JSON pass-through, 413."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from portway.http.client import simple_request
from tests.helpers import free_port, run_gateway, run_upstream, simple_config

CONSUMERS = [{"username": "alice", "credentials": {"key_auth": [{"key": "alice-key"}]}}]


def _cfg(url: str, conf: dict[str, Any], **route: Any) -> dict[str, Any]:
    cfg = simple_config(
        url,
        plugins=[{"name": "key_auth"}, {"name": "request_transformer", "config": conf}],
        **route,
    )
    cfg["consumers"] = CONSUMERS
    return cfg


async def _send(
    conf: dict[str, Any],
    method: str,
    path: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    **route: Any,
) -> tuple[int, Any, Any]:
    async with run_upstream() as up:
        async with run_gateway(_cfg(up.url, conf, **route)) as gw:
            h = [("apikey", "alice-key"), *(headers or [])]
            r = await simple_request(method, gw.url + path, headers=h, body=body)
        seen = up.requests[0] if up.requests else None
    return r.status, orjson.loads(r.body), seen


async def test_headers_in_kong_order_with_templates() -> None:
    conf = {
        "headers": {
            "remove": ["x-debug", "x-new"],
            "rename": {"x-old": "x-new"},
            "replace": {"x-mode": "replaced", "x-absent": "never"},
            "add": {
                "x-tenant": "{consumer.username}",
                "x-mode": "not-added",
                "x-org": "{header.x-org-id}",
            },
            "append": {"x-trace": "gw"},
        }
    }
    status, echo, _ = await _send(
        conf,
        "GET",
        "/x",
        [
            ("x-debug", "1"),
            ("x-new", "stale"),
            ("x-old", "moved"),
            ("x-mode", "client"),
            ("x-trace", "client"),
            ("x-org-id", "o-42"),
        ],
    )
    assert status == 200
    got: dict[str, list[str]] = {}
    for k, v in echo["headers"]:
        got.setdefault(k, []).append(v)
    assert "x-debug" not in got
    assert got["x-new"] == ["moved"]  # remove ran before rename: the stale one is gone
    assert got["x-mode"] == ["replaced"]  # replace, then add skipped (present)
    assert "x-absent" not in got  # replace only touches existing fields
    assert got["x-tenant"] == ["alice"] and got["x-org"] == ["o-42"]
    assert got["x-trace"] == ["client", "gw"]


async def test_query_add_remove_keeps_other_arguments_byte_exact() -> None:
    conf = {
        "query": {"add": {"v": "2", "who": "{consumer.username}", "keep": "x"}, "remove": ["debug"]}
    }
    status, echo, _ = await _send(conf, "GET", "/x?a=%41%20b&debug=1&keep=mine&debug=2")
    assert status == 200
    assert echo["query"] == "a=%41%20b&keep=mine&v=2&who=alice"


async def test_path_template_after_strip_prefix_and_params() -> None:
    status, echo, _ = await _send(
        {"path": "/v2{path}/by/{header.x-user}"},
        "GET",
        "/api/items?q=1",
        [("x-user", "a b/../c")],
        match={"paths": ["/api"]},
        strip_prefix=True,
    )
    assert status == 200
    # {path} is what the route would forward (prefix stripped); a header value is encoded
    assert echo["path"] == "/v2/items/by/a%20b%2F..%2Fc"
    assert echo["query"] == "q=1"
    status, echo, _ = await _send(
        {"path": "/teams/{params.team}/{params.rest}"},
        "GET",
        "/t/red/a/b",
        match={"paths": ["/t/{team}/{rest:path}"]},
    )
    assert status == 200 and echo["path"] == "/teams/red/a/b"


async def test_path_template_applied_once_across_retries() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with run_upstream() as up:
        cfg = _cfg(up.url, {"path": "/v2{path}"})
        cfg["upstreams"]["u"]["targets"] = [{"url": dead}, {"url": up.url}]
        cfg["upstreams"]["u"]["balancing"] = "round_robin"
        cfg["upstreams"]["u"]["retries"] = {"attempts": 3}
        async with run_gateway(cfg) as gw:
            for _ in range(2):  # one of the two starts on the dead target
                r = await simple_request("GET", gw.url + "/p", headers=[("apikey", "alice-key")])
                assert r.status == 200 and orjson.loads(r.body)["path"] == "/v2/p"


async def test_json_body_rewrite_sets_exact_content_length() -> None:
    conf = {
        "json": {
            "set": {
                "meta.source": "gateway",
                "meta.user": "{consumer.username}",
                "items[*].seen": True,
            },
            "remove": ["internal", "items[*].secret"],
            "rename": {"user_id": "userId"},
        }
    }
    body = orjson.dumps(
        {"user_id": 7, "internal": {"x": 1}, "items": [{"secret": 1, "n": 1}, {"n": 2}]}
    )
    status, echo, seen = await _send(
        conf, "POST", "/x", [("content-type", "application/json")], body
    )
    assert status == 200
    sent = echo["body"].encode("latin-1")
    assert orjson.loads(sent) == {
        "userId": 7,
        "items": [{"n": 1, "seen": True}, {"n": 2, "seen": True}],
        "meta": {"source": "gateway", "user": "alice"},
    }
    assert seen.headers.get("content-length") == str(len(sent))
    assert seen.headers.get("transfer-encoding") is None


async def test_chunked_json_body_is_rewritten_with_content_length() -> None:
    import asyncio

    async with run_upstream() as up:
        async with run_gateway(_cfg(up.url, {"json": {"set": {"a": 1}}})) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(
                b"POST /x HTTP/1.1\r\nHost: h\r\napikey: alice-key\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                b'3\r\n{"b\r\n4\r\n":2}\r\n0\r\n\r\n'
            )
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    seen = up.requests[0]
    assert seen.headers.get("transfer-encoding") is None
    assert seen.headers.get("content-length") == str(len(b'{"b":2,"a":1}'))


async def test_non_json_body_passes_through_unchanged_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conf = {"json": {"set": {"a": 1}}}
    caplog.set_level(logging.INFO, logger="portway.plugins")
    s1, echo1, _ = await _send(conf, "POST", "/x", [("content-type", "text/plain")], b"{plain}")
    s2, echo2, _ = await _send(conf, "POST", "/x", [("content-type", "application/json")], b"{bad")
    assert (s1, echo1["body"]) == (200, "{plain}")
    assert (s2, echo2["body"]) == (200, "{bad")
    text = caplog.text
    assert "body is not JSON" in text and "not valid JSON" in text


async def test_oversize_json_body_is_413() -> None:
    conf = {"json": {"set": {"a": 1}}}
    body = orjson.dumps({"pad": "x" * 4000})
    status, answer, seen = await _send(
        conf, "POST", "/x", [("content-type", "application/json")], body, max_body_bytes=1024
    )
    assert (status, answer["code"], seen) == (413, "payload_too_large", None)


@pytest.mark.parametrize(
    "conf, where, fragment",
    [
        ({"headers": {"add": {"content-length": "1"}}}, "headers.add", "managed by the gateway"),
        ({"headers": {"add": {"x-a": "{consumer.password}"}}}, "headers.add", "not a consumer"),
        ({"headers": {"append": {"x-a": "{nope}"}}}, "headers.append", "unknown placeholder"),
        ({"path": "v2{path}"}, "path", "must start with '/'"),
        ({"path": "/v2?x=1"}, "path", "use `query`"),
        ({"json": {"remove": ["a..b"]}}, "json.remove", "JSON path"),
        ({"json": {"rename": {"a[*].b": "c.d"}}}, "json.rename", "without [*]"),
        ({"query": {"drop": ["a"]}}, "query.drop", "unknown key"),
    ],
)
def test_bad_config_rejected_with_path_and_line(
    conf: dict[str, Any], where: str, fragment: str
) -> None:
    route = {
        "name": "r",
        "upstream": "u",
        "plugins": [{"name": "request_transformer", "config": conf}],
    }
    doc = {"upstreams": {"u": {"targets": [{"url": "http://127.0.0.1:1"}]}}, "routes": [route]}
    with pytest.raises(ConfigError) as ei:
        load_config_text(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode(), "c.yaml")
    [err] = ei.value.errors
    assert f"routes[0].plugins[0].config.{where}" in str(err) and fragment in str(err), str(err)
    assert err.line is not None and err.line > 1


async def test_validation_then_transformation_read_the_body_once() -> None:
    plugins = [
        {"name": "request_validation", "config": {"body_schema": {"required": ["user_id"]}}},
        {"name": "request_transformer", "config": {"json": {"rename": {"user_id": "userId"}}}},
    ]
    async with run_upstream() as up:
        async with run_gateway(simple_config(up.url, plugins=plugins)) as gw:
            ok = await simple_request(
                "POST",
                gw.url + "/x",
                headers=[("content-type", "application/json")],
                body=b'{"user_id": 1}',
            )
            bad = await simple_request(
                "POST", gw.url + "/x", headers=[("content-type", "application/json")], body=b"{}"
            )
    assert ok.status == 200 and orjson.loads(orjson.loads(ok.body)["body"]) == {"userId": 1}
    assert bad.status == 400 and len(up.requests) == 1

"""``headers`` through a real gateway: add/set/remove/rename both ways; unsafe names rejected."""

from __future__ import annotations

import orjson
import pytest

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import (
    ServingPath,
    free_port,
    http_get,
    run_gateway,
    run_upstream,
    simple_config,
)

OPS = {
    "request": {
        "add": {"X-Add": "added", "X-Multi": "second"},
        "set": {"X-Set": "forced"},
        "remove": ["X-Secret"],
        "rename": {"X-Old": "X-New"},
    },
    "response": {
        "add": {"X-Resp-Add": "a", "Vary": "Origin"},
        "set": {"X-Powered-By": "portway"},
        "remove": ["Server"],
        "rename": {"X-Internal": "X-Public"},
    },
}


async def _upstream(req: Request) -> Response:
    h = Headers(
        [
            (b"content-type", b"application/json"),
            (b"server", b"secret-server/1.0"),
            (b"x-powered-by", b"php"),
            (b"x-internal", b"v"),
            (b"vary", b"Accept"),
        ]
    )
    return Response(200, h, orjson.dumps([[k, v] for k, v in req.headers]))


async def test_all_operations_both_directions(path: ServingPath) -> None:
    async with run_upstream(_upstream) as up:
        cfg = simple_config(up.url, plugins=[{"name": "headers", "config": OPS}])
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)
            status, h, body = await http_get(
                gw.url + "/x",
                headers=[
                    ("X-Multi", "first"),
                    ("X-Set", "client"),
                    ("X-Set", "client2"),
                    ("X-Secret", "s"),
                    ("X-Old", "renamed-value"),
                ],
            )
            path.assert_served(1)
        client_req = up.requests[-1]
    assert status == 200
    sent = orjson.loads(body)

    def got(name: str) -> list[str]:
        return [v for k, v in sent if k == name]

    assert got("x-add") == ["added"]
    assert got("x-multi") == ["first", "second"]  # add appends
    assert got("x-set") == ["forced"]  # set replaces every field of that name
    assert got("x-secret") == []
    assert got("x-old") == [] and got("x-new") == ["renamed-value"]
    assert client_req.headers.get_all("x-set") == ["forced"]
    assert h.get_all("x-resp-add") == ["a"]
    assert h.get_all("vary") == ["Accept", "Origin"]
    assert h.get_all("x-powered-by") == ["portway"]
    assert h.get("server") is None
    assert h.get("x-internal") is None and h.get("x-public") == "v"


async def test_response_edits_apply_to_gateway_errors() -> None:
    cfg = simple_config(
        f"http://127.0.0.1:{free_port()}",
        plugins=[{"name": "headers", "config": {"response": {"set": {"x-edge": "1"}}}}],
    )
    cfg["upstreams"]["u"]["retries"] = {"attempts": 1}
    async with run_gateway(cfg) as gw:
        status, h, body = await http_get(gw.url + "/x")
    assert status == 502 and h.get("x-edge") == "1"
    assert orjson.loads(body)["code"] == "upstream_connect_failed"


@pytest.mark.parametrize(
    "ops, fragment",
    [
        ({"request": {"set": {"Content-Length": "0"}}}, "managed by the gateway"),
        ({"request": {"add": {"Transfer-Encoding": "chunked"}}}, "managed by the gateway"),
        ({"response": {"set": {"Connection": "close"}}}, "managed by the gateway"),
        ({"request": {"set": {"Host": "evil"}}}, "managed by the gateway"),
        ({"request": {"remove": ["Host"]}}, "managed by the gateway"),
        ({"request": {"rename": {"X-Len": "content-length"}}}, "managed by the gateway"),
        ({"response": {"rename": {"upgrade": "x-upgrade"}}}, "managed by the gateway"),
        ({"request": {"set": {"X-Bad Name": "v"}}}, "invalid header name"),
        ({"request": {"set": {"X-A:b": "v"}}}, "invalid header name"),
        ({"response": {"add": {"X-Inject": "a\r\nSet-Cookie: x=1"}}}, "CR, LF"),
        ({"response": {"add": {"X-Nul": "a\u0000b"}}}, "CR, LF"),
        ({"request": {"sett": {"X-A": "b"}}}, "sett"),
    ],
)
def test_unsafe_edits_rejected_at_config_load(ops: dict[str, object], fragment: str) -> None:
    route = {"name": "r", "upstream": "u", "plugins": [{"name": "headers", "config": ops}]}
    doc = {"upstreams": {"u": {"targets": [{"url": "http://127.0.0.1:1"}]}}, "routes": [route]}
    with pytest.raises(ConfigError) as ei:
        load_config_text(orjson.dumps(doc).decode(), "c.yaml")  # JSON is YAML
    errors = [str(e) for e in ei.value.errors]
    assert len(errors) == 1 and fragment in errors[0], errors
    assert "routes[0].plugins[0].config" in errors[0]

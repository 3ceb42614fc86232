"""DELETE /cache purges everything, one key, or one route's objects."""

from __future__ import annotations

from typing import Any

from portway.http.client import simple_request
from portway.http.headers import Headers
from portway.http.models import Request, Response
from tests.helpers import free_port, http_get, run_gateway, run_upstream


def _route(name: str, **cache: Any) -> dict[str, Any]:
    return {
        "name": name,
        "match": {"paths": [f"/{name}"]},
        "upstream": "u",
        "plugins": [{"name": "cache", "config": cache}],
    }


async def test_purge_by_route_leaves_other_routes_cached() -> None:
    async def handler(req: Request) -> Response:
        return Response(200, Headers.from_pairs([("cache-control", "max-age=600")]), b"x")

    admin = free_port()
    async with run_upstream(handler) as up:
        cfg = {
            "admin": {"enabled": True, "address": f"127.0.0.1:{admin}", "token": "t"},
            "upstreams": {"u": {"targets": [{"url": up.url}]}},
            "routes": [_route("a"), _route("b")],
        }
        async with run_gateway(cfg) as gw:
            for path in ("/a", "/b"):
                assert (await http_get(gw.url + path))[1].get("x-cache") == "MISS"
                assert (await http_get(gw.url + path))[1].get("x-cache") == "HIT"
            auth = [("authorization", "Bearer t")]
            bad = await simple_request(
                "DELETE", f"http://127.0.0.1:{admin}/cache?route=", headers=auth
            )
            assert bad.status == 400
            r = await simple_request(
                "DELETE", f"http://127.0.0.1:{admin}/cache?route=a", headers=auth
            )
            assert r.status == 200 and b'"purged":' in r.body
            assert (await http_get(gw.url + "/a"))[1].get("x-cache") == "MISS"
            assert (await http_get(gw.url + "/b"))[1].get("x-cache") == "HIT"


async def test_purge_one_key_with_its_slash_as_is() -> None:
    async def handler(req: Request) -> Response:
        return Response(200, Headers.from_pairs([("cache-control", "max-age=600")]), b"x")

    admin = free_port()
    async with run_upstream(handler) as up:
        cfg = {
            "admin": {"enabled": True, "address": f"127.0.0.1:{admin}", "token": "t"},
            "upstreams": {"u": {"targets": [{"url": up.url}]}},
            "routes": [_route("a", expose_key=True)],
        }
        async with run_gateway(cfg) as gw:
            _, h, _ = await http_get(gw.url + "/a")
            key = h.get("x-cache-key")
            assert key is not None and "/" in key  # route/hash
            assert (await http_get(gw.url + "/a"))[1].get("x-cache") == "HIT"
            auth = [("authorization", "Bearer t")]
            r = await simple_request(
                "DELETE", f"http://127.0.0.1:{admin}/cache/{key}", headers=auth
            )
            assert r.status == 200, r.body
            assert b'"purged":' in r.body
            assert (await http_get(gw.url + "/a"))[1].get("x-cache") == "MISS"
            again = await simple_request(
                "DELETE", f"http://127.0.0.1:{admin}/cache/{key}", headers=auth
            )
            assert again.status == 200  # re-cached by the MISS above
            gone = await simple_request(
                "DELETE", f"http://127.0.0.1:{admin}/cache/{key}", headers=auth
            )
            assert gone.status == 404

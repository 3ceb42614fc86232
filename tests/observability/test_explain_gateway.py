"""``?explain`` with ``X-Portway-Debug`` through a real gateway: a plugin's 401, a request no
route matches and a proxied success each answer with the explanation."""

from __future__ import annotations

from typing import Any

import orjson

from tests.helpers import http_get, run_gateway, run_upstream

TOKEN = "dbg-token"


def _config(up: str) -> dict[str, Any]:
    return {
        "server": {"debug_token": TOKEN},
        "upstreams": {"svc": {"targets": [{"url": up}]}},
        "routes": [
            {
                "name": "users",
                "match": {"paths": ["/users"], "methods": ["GET"]},
                "upstream": "svc",
                "plugins": [{"name": "key_auth"}],
            },
            {"name": "open", "match": {"paths": ["=/open"]}, "upstream": "svc"},
        ],
        "consumers": [{"username": "alice", "credentials": {"key_auth": [{"key": "k" * 20}]}}],
    }


async def _explain(url: str) -> tuple[int, dict[str, Any], str | None]:
    status, headers, body = await http_get(url, headers=[("x-portway-debug", TOKEN)])
    return status, orjson.loads(body), headers.get("x-portway-debug")


async def test_explain_a_plugin_rejection_a_missing_route_and_a_success() -> None:
    async with run_upstream() as up, run_gateway(_config(up.url)) as gw:
        # 1. key_auth answers 401: who rejected and why, and why the other route did not match
        status, doc, header = await _explain(gw.url + "/users?explain")
        assert status == 401
        assert doc["route"]["name"] == "users"
        rej = doc["rejected_by"]
        assert rej["plugin"] == "key_auth" and rej["status"] == 401 and rej["reason"]
        assert rej["phase"] == "on_request"
        assert doc["upstream"] is None and doc["response"]["status"] == 401
        others = {r["name"]: r["not_matched"] for r in doc["routes_not_taken"]}
        assert any("/users" in reason and "path" in reason for reason in others["open"])
        assert header is not None and "rejected_by=key_auth" in header

        # 2. no route: every route with the reason it failed
        status, doc, _ = await _explain(gw.url + "/nowhere?explain")
        assert status == 404
        assert doc["route"] is None and doc["error"]["code"] == "no_route"
        others = {r["name"]: r["not_matched"] for r in doc["routes_not_taken"]}
        assert set(others) == {"users", "open"}
        assert all(any("path /nowhere" in x for x in reasons) for reasons in others.values())
        status, doc, _ = await _explain(gw.url + "/users?explain&x=1")  # method is fine
        assert status == 401

        # 3. success: proxied, with the upstream, the target, every attempt and the response
        n = len(up.requests)
        status, doc, header = await _explain(gw.url + "/open?explain")
        assert status == 200 and len(up.requests) == n + 1
        assert doc["rejected_by"] is None and doc["error"] is None
        assert doc["upstream"]["name"] == "svc"
        assert doc["upstream"]["target"] == f"127.0.0.1:{up.port}"
        assert [t["outcome"] for t in doc["upstream"]["tries"]] == ["200"]
        assert doc["response"] == {"status": 200, "upstream": True}
        assert [s["what"] for s in doc["steps"]] == ["route"]
        others = {r["name"]: r["not_matched"] for r in doc["routes_not_taken"]}
        assert any("path /open" in x for x in others["users"])

        # without the token: proxied as usual, no explanation
        status, _, body = await http_get(gw.url + "/open?explain")
        assert status == 200 and b"routes_not_taken" not in body

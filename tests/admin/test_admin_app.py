"""Admin API handler, driven with constructed requests over a fake control."""

from __future__ import annotations

import asyncio
import hashlib
import re

import orjson
import pytest

from portway.admin.app import AdminApp
from portway.admin.models import ConsumerView, StatusBody, UpstreamList
from portway.admin.openapi import openapi_spec
from portway.admin.redact import REDACTED
from portway.admin.source import load_source
from portway.config.schema import AdminConfig
from portway.observability.metrics import Metrics
from tests.admin.conftest import BASE_YAML, TOKEN, FakeControl, js, make_request
from tests.observability.support import make_ctx

# --- auth and dispatch ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("authorization", "Bearer wrong")],
        [("authorization", f"Basic {TOKEN}")],
        [("authorization", "Bearer")],
        [("authorization", f"Bearer {TOKEN}x")],
    ],
)
async def test_unauthenticated_calls_get_401(app: AdminApp, headers: list[tuple[str, str]]) -> None:
    for method, path in [("GET", "/status"), ("GET", "/nope"), ("PUT", "/config")]:
        r = await app.handle(make_request(method, path, auth=False, headers=headers))
        assert r.status == 401
        assert r.headers.get("www-authenticate", "").startswith('Bearer realm="portway-admin"')
        assert js(r)["code"] == "unauthorized"


async def test_bearer_scheme_case_insensitive(app: AdminApp) -> None:
    r = await app.handle(
        make_request("GET", "/status", auth=False, headers=[("authorization", f"bearer {TOKEN}")])
    )
    assert r.status == 200


async def test_auth_off_only_on_loopback(control: FakeControl) -> None:
    open_app = AdminApp(control, AdminConfig.model_validate({"auth": False}))
    assert (await open_app.handle(make_request("GET", "/status", auth=False))).status == 200
    public = AdminApp(
        control, AdminConfig.model_validate({"auth": False, "address": "0.0.0.0:9901"})
    )
    assert (await public.handle(make_request("GET", "/status", auth=False))).status == 401
    tokenless = AdminApp(control, AdminConfig.model_validate({}))
    assert (await tokenless.handle(make_request("GET", "/status"))).status == 401


async def test_404_405_options(app: AdminApp) -> None:
    r = await app.handle(make_request("GET", "/nothing"))
    assert r.status == 404 and js(r)["status"] == 404
    r = await app.handle(make_request("PATCH", "/config"))
    assert r.status == 405
    assert r.headers.get("allow") == "GET, HEAD, OPTIONS, PUT"
    r = await app.handle(make_request("OPTIONS", "/consumers"))
    assert r.status == 204 and "POST" in (r.headers.get("allow") or "")
    assert (await app.handle(make_request("HEAD", "/status"))).status == 200


# --- status and config ---------------------------------------------------------------------


async def test_status(app: AdminApp) -> None:
    r = await app.handle(make_request("GET", "/status"))
    body = js(r)
    StatusBody.model_validate(body)
    assert body["workers"] == 2 and body["version"] and body["uptime"] >= 0
    assert body["last_reload"]["result"] == "none"
    assert r.headers.get("cache-control") == "no-store"


async def test_get_config_redacts_secrets(app: AdminApp) -> None:
    body = js(await app.handle(make_request("GET", "/config")))
    assert body["consumers"][0]["credentials"]["key_auth"][0]["key"] == REDACTED
    assert body["server"]["debug_token"] == REDACTED
    assert "alice-key" not in orjson.dumps(body).decode()
    assert "dbg-secret" not in orjson.dumps(body).decode()


async def test_put_config_json_round_trip_keeps_secrets(
    app: AdminApp, control: FakeControl
) -> None:
    doc = js(await app.handle(make_request("GET", "/config")))
    doc["routes"][1]["match"]["paths"] = ["=/healthz"]
    r = await app.handle(
        make_request("PUT", "/config", orjson.dumps(doc), content_type="application/json")
    )
    assert r.status == 200, js(r)
    assert js(r)["result"] == "ok" and js(r)["written"] is False
    cfg = control.config()
    assert cfg.routes[1].match.paths == ["=/healthz"]
    assert cfg.consumers[0].credentials.key_auth[0]["key"] == "alice-key"
    assert cfg.server.debug_token == "dbg-secret"


async def test_put_config_yaml_keeps_env_references(app: AdminApp, control: FakeControl) -> None:
    text = BASE_YAML.replace("=/health", "=/ping")
    r = await app.handle(
        make_request("PUT", "/config", text.encode(), content_type="application/yaml")
    )
    assert r.status == 200
    assert "${ALICE_KEY:-alice-key}" in control.config_text()
    assert control.config().routes[1].match.paths == ["=/ping"]


async def test_put_config_errors(app: AdminApp, control: FakeControl) -> None:
    before = control.config()
    bad = BASE_YAML.replace("upstream: users\n    plugins", "upstream: nowhere\n    plugins")
    r = await app.handle(make_request("PUT", "/config", bad.encode(), content_type="text/yaml"))
    assert r.status == 422
    errs = js(r)["errors"]
    assert errs and errs[0]["path"].startswith("routes[0]") and errs[0]["line"] == 10
    assert control.config() is before
    cases = [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 422),
        (b"a: [1, 2", "application/yaml", 400),
        (b"routes: []", "text/html", 415),
        (b"", "application/yaml", 400),
        (b"\xff\xfe", "application/yaml", 400),
        (b"bogus_section: 1", "application/yaml", 422),
    ]
    for body, ct, status in cases:
        r = await app.handle(make_request("PUT", "/config", body, content_type=ct))
        assert r.status == status, (body, ct, js(r))
        assert js(r)["status"] == status
    assert control.config() is before


async def test_put_config_too_large(control: FakeControl) -> None:
    app = AdminApp(control, AdminConfig.model_validate({"token": TOKEN}), max_body=1000)
    r = await app.handle(
        make_request("PUT", "/config", b"#" * 5000, content_type="application/yaml")
    )
    assert r.status == 413


async def test_write_back(app: AdminApp, control: FakeControl) -> None:
    r = await app.handle(
        make_request(
            "PUT",
            "/config",
            BASE_YAML.encode(),
            content_type="application/yaml",
            query=b"write_back=true",
        )
    )
    assert r.status == 409  # no config file
    control.config_path = "/tmp/does-not-matter.yaml"
    r = await app.handle(
        make_request(
            "PUT",
            "/config",
            BASE_YAML.encode(),
            content_type="application/yaml",
            query=b"write_back=1",
        )
    )
    assert r.status == 200 and js(r)["written"] is True and control.written
    r = await app.handle(
        make_request(
            "PUT",
            "/config",
            BASE_YAML.encode(),
            content_type="application/yaml",
            query=b"write_back=maybe",
        )
    )
    assert r.status == 400


async def test_concurrent_puts_are_serialised(app: AdminApp, control: FakeControl) -> None:
    control.apply_delay = 0.02
    texts = [BASE_YAML.replace("=/health", f"=/h{i}") for i in range(6)]
    rs = await asyncio.gather(
        *(
            app.handle(make_request("PUT", "/config", t.encode(), content_type="application/yaml"))
            for t in texts
        )
    )
    assert all(r.status == 200 for r in rs)
    assert control.max_concurrent_applies == 1
    assert len(control.applied) == 6
    assert control.config().routes[1].match.paths[0] == "=/h5"


async def test_validate_and_reload(app: AdminApp, control: FakeControl) -> None:
    r = await app.handle(
        make_request(
            "POST", "/config/validate", BASE_YAML.encode(), content_type="application/yaml"
        )
    )
    assert r.status == 200 and js(r) == {"valid": True, "errors": []}
    r = await app.handle(
        make_request("POST", "/config/validate", b"routes: 5", content_type="application/yaml")
    )
    assert r.status == 422 and js(r)["errors"][0]["path"] == "routes"
    assert control.applied == []
    assert (await app.handle(make_request("POST", "/reload"))).status == 409
    control.config_path = "/tmp/x.yaml"
    r = await app.handle(make_request("POST", "/reload"))
    assert r.status == 200 and js(r)["result"] == "ok"


# --- routes and upstreams ------------------------------------------------------------------


async def test_routes(app: AdminApp) -> None:
    body = js(await app.handle(make_request("GET", "/routes")))
    names = [r["name"] for r in body["data"]]
    assert sorted(names) == ["health", "users"]
    users = next(r for r in body["data"] if r["name"] == "users")
    assert users["plugins"] == ["key_auth"] and users["methods"] == ["GET", "POST"]
    r = await app.handle(make_request("GET", "/routes/users"))
    assert r.status == 200 and js(r)["upstream"] == "users"
    assert (await app.handle(make_request("GET", "/routes/ghost"))).status == 404


async def test_upstreams_and_drain(app: AdminApp, control: FakeControl) -> None:
    body = js(await app.handle(make_request("GET", "/upstreams")))
    UpstreamList.model_validate(body)
    targets = body["data"][0]["targets"]
    assert [t["id"] for t in targets] == ["127.0.0.1:9001", "127.0.0.1:9002"]
    assert targets[0]["healthy"] is True and targets[0]["breaker"] == "closed"
    r = await app.handle(make_request("POST", "/upstreams/users/targets/127.0.0.1%3A9001/drain"))
    assert r.status == 200 and js(r)["draining"] is True
    up = control.upstreams()["users"]
    assert up.targets[0].draining
    picked = {up.pick(make_ctx(), set()).id for _ in range(10)}  # type: ignore[union-attr]
    assert picked == {"127.0.0.1:9002"}
    r = await app.handle(make_request("DELETE", "/upstreams/users/targets/127.0.0.1:9001/drain"))
    assert r.status == 200 and not up.targets[0].draining
    assert (await app.handle(make_request("POST", "/upstreams/x/targets/a:1/drain"))).status == 404
    r = await app.handle(make_request("POST", "/upstreams/users/targets/1.2.3.4:1/drain"))
    assert r.status == 404
    assert (await app.handle(make_request("GET", "/upstreams/users"))).status == 200


# --- consumers -----------------------------------------------------------------------------


async def test_list_and_get_consumers(app: AdminApp) -> None:
    body = js(await app.handle(make_request("GET", "/consumers")))
    alice = body["data"][0]
    ConsumerView.model_validate(alice)
    assert alice["credentials"][0]["kind"] == "key_auth"
    assert alice["credentials"][0]["key"] == REDACTED
    assert len(alice["credentials"][0]["id"]) == 16
    assert (await app.handle(make_request("GET", "/consumers/alice"))).status == 200
    assert (await app.handle(make_request("GET", "/consumers/bob"))).status == 404
    r = await app.handle(make_request("GET", "/consumers/alice/credentials"))
    assert js(r)["data"][0]["kind"] == "key_auth"


async def test_create_update_delete_consumer(app: AdminApp, control: FakeControl) -> None:
    body = {"username": "bob", "groups": ["ops"], "credentials": {"key_auth": [{"key": "bk"}]}}
    r = await app.handle(
        make_request("POST", "/consumers", orjson.dumps(body), content_type="application/json")
    )
    assert r.status == 201, js(r)
    assert r.headers.get("location") == "/consumers/bob"
    bob = control.config().consumers[1]
    # stored hashed, never in clear
    assert bob.credentials.key_auth == [{"key_sha256": hashlib.sha256(b"bk").hexdigest()}]
    assert "bk" not in control.config_text().replace("bob", "")
    # the source keeps alice's env reference
    assert "${ALICE_KEY:-alice-key}" in control.config_text()
    r = await app.handle(
        make_request("POST", "/consumers", orjson.dumps(body), content_type="application/json")
    )
    assert r.status == 409
    r = await app.handle(
        make_request("PUT", "/consumers/bob", b'{"groups": ["x"]}', content_type="application/json")
    )
    assert r.status == 200 and js(r)["groups"] == ["x"]
    r = await app.handle(
        make_request("PUT", "/consumers/carol", b"{}", content_type="application/json")
    )
    assert r.status == 201
    r = await app.handle(
        make_request(
            "PUT", "/consumers/carol", b'{"username": "dave"}', content_type="application/json"
        )
    )
    assert r.status == 422
    assert (await app.handle(make_request("DELETE", "/consumers/bob"))).status == 204
    assert (await app.handle(make_request("DELETE", "/consumers/bob"))).status == 404
    assert [c.username for c in control.config().consumers] == ["alice", "carol"]


@pytest.mark.parametrize("username", [".", ".."])
async def test_dot_segment_usernames_are_refused(app: AdminApp, username: str) -> None:
    # RFC 3986 removes "." and ".." from a path: no /consumers/{username} could name them
    body = orjson.dumps({"username": username})
    r = await app.handle(make_request("POST", "/consumers", body, content_type="application/json"))
    assert r.status == 422, js(r)
    spec = openapi_spec()
    op = spec["paths"]["/consumers/{username}"]["get"]
    pattern = next(p for p in op["parameters"] if p["name"] == "username")["schema"]["pattern"]
    assert not re.match(pattern, username) and re.match(pattern, "...")


async def test_consumer_body_errors(app: AdminApp) -> None:
    cases = [
        (b"{", "application/json", 400),
        (b"{}", "text/plain", 415),
        (b"", "application/json", 400),
        (b'{"username": ""}', "application/json", 422),
        (b'{"username": "a", "extra": 1}', "application/json", 422),
        (b'{"username": "a", "credentials": {"nope": [{}]}}', "application/json", 422),
        (b'{"username": "a b"}', "application/json", 422),
        (b'{"username": "a", "credentials": {"jwt": [{"issuer": "x"}]}}', "application/json", 422),
    ]
    for body, ct, status in cases:
        r = await app.handle(make_request("POST", "/consumers", body, content_type=ct))
        assert r.status == status, (body, js(r))


async def test_credentials(app: AdminApp, control: FakeControl) -> None:
    r = await app.handle(make_request("POST", "/consumers/alice/credentials/key_auth"))
    assert r.status == 201
    created = js(r)
    key = created["generated_key"]
    assert len(key) >= 32 and created["key_sha256"] == REDACTED
    stored = control.config().consumers[0].credentials.key_auth[1]
    assert stored == {"key_sha256": hashlib.sha256(key.encode()).hexdigest()}
    # the generated key is never shown again
    listing = js(await app.handle(make_request("GET", "/consumers/alice/credentials")))
    assert key not in orjson.dumps(listing).decode()
    assert created["id"] in [c["id"] for c in listing["data"]]
    r = await app.handle(
        make_request(
            "POST",
            "/consumers/alice/credentials/basic_auth",
            b'{"password": "pw-123"}',
            content_type="application/json",
        )
    )
    assert r.status == 201, js(r)
    h = control.config().consumers[0].credentials.basic_auth[0]["password_hash"]
    assert h.startswith("$argon2")
    r = await app.handle(
        make_request("DELETE", f"/consumers/alice/credentials/key_auth/{created['id']}")
    )
    assert r.status == 204
    assert len(control.config().consumers[0].credentials.key_auth) == 1
    r = await app.handle(
        make_request("DELETE", f"/consumers/alice/credentials/key_auth/{created['id']}")
    )
    assert r.status == 404
    assert (
        await app.handle(make_request("POST", "/consumers/alice/credentials/oauth"))
    ).status == 404
    assert (await app.handle(make_request("POST", "/consumers/zed/credentials/jwt"))).status == 404
    for bad in (b"[]", b"null", b"1"):
        r = await app.handle(
            make_request(
                "POST", "/consumers/alice/credentials/jwt", bad, content_type="application/json"
            )
        )
        assert r.status == 422
    r = await app.handle(
        make_request(
            "POST",
            "/consumers/alice/credentials/jwt",
            b'{"issuer": "i"}',
            content_type="application/json",
        )
    )
    assert r.status == 422 and js(r)["errors"]


# --- cache, metrics, spec ------------------------------------------------------------------


async def test_cache_purge_tolerates_no_cache(app: AdminApp) -> None:
    r = await app.handle(make_request("DELETE", "/cache"))
    assert r.status in (200, 503)
    if r.status == 200:
        assert js(r) == {"purged": 0}
    r = await app.handle(make_request("DELETE", "/cache/some-key"))
    assert r.status in (404, 503)


async def test_metrics_endpoint(control: FakeControl) -> None:
    m = Metrics(include_default_registry=False)
    m.on_request_done(make_ctx())
    app = AdminApp(control, AdminConfig.model_validate({"token": TOKEN}), metrics=m)
    r = await app.handle(make_request("GET", "/metrics"))
    assert r.status == 200 and b"portway_requests_total" in r.body  # type: ignore[operator]
    assert (r.headers.get("content-type") or "").startswith("text/plain")
    no_metrics = AdminApp(control, AdminConfig.model_validate({"token": TOKEN}))
    assert (await no_metrics.handle(make_request("GET", "/metrics"))).status == 503


async def test_openapi(app: AdminApp) -> None:
    spec = js(await app.handle(make_request("GET", "/openapi.json")))
    assert spec["openapi"] == "3.1.0"
    assert "GatewayConfig" in spec["components"]["schemas"]
    ops = {(p, m) for p, item in spec["paths"].items() for m in item}
    assert ("/consumers/{username}", "delete") in ops and ("/config", "put") in ops
    for item in spec["paths"].values():
        for op in item.values():
            assert "401" in op["responses"]
    assert spec == openapi_spec()


def test_source_loader_keeps_yaml12_scalars() -> None:
    doc = load_source("retries: {on: [connect_error]}\nx: yes\nwhen: 2024-01-01\nb: true\n")
    assert doc == {
        "retries": {"on": ["connect_error"]},
        "x": "yes",
        "when": "2024-01-01",
        "b": True,
    }

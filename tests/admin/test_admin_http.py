"""The admin API on a real listener: over a fake control, and over a real running gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import yaml

from portway.admin.app import AdminApp
from portway.admin.control import RuntimeControl
from portway.admin.server import AdminConfigError, check_admin_config, serve_admin
from portway.config.schema import AdminConfig
from portway.http.client import simple_request
from portway.observability.metrics import Metrics
from portway.runtime.gateway import Gateway
from tests.admin.conftest import AUTH, BASE_YAML, TOKEN, FakeControl
from tests.helpers import free_port, http_get, run_gateway, run_upstream, simple_config


async def test_wire_auth_and_concurrent_puts() -> None:
    control = FakeControl()
    control.apply_delay = 0.03
    app = AdminApp(control, AdminConfig.model_validate({"token": TOKEN}))
    port = free_port()
    server = await serve_admin(app, "127.0.0.1", port)
    base = f"http://127.0.0.1:{port}"
    try:
        r = await simple_request("GET", base + "/status")
        assert r.status == 401 and r.headers.get("www-authenticate")
        assert orjson.loads(r.body)["code"] == "unauthorized"
        r = await simple_request(
            "PUT",
            base + "/config",
            body=BASE_YAML.encode(),
            headers=[("content-type", "application/yaml")],
        )
        assert r.status == 401 and control.applied == []
        texts = [BASE_YAML.replace("=/health", f"=/w{i}") for i in range(5)]
        rs = await asyncio.gather(
            *(
                simple_request(
                    "PUT",
                    base + "/config",
                    body=t.encode(),
                    headers=[*AUTH, ("content-type", "application/yaml")],
                )
                for t in texts
            )
        )
        assert [r.status for r in rs] == [200] * 5
        assert control.max_concurrent_applies == 1
        r = await simple_request("GET", base + "/openapi.json", headers=AUTH)
        assert r.status == 200 and orjson.loads(r.body)["openapi"] == "3.1.0"
    finally:
        server.close()


def test_unsafe_admin_configs_refused() -> None:
    control = FakeControl()
    for cfg in ({"auth": False, "address": "0.0.0.0:9901"}, {"auth": True}):
        app = AdminApp(control, AdminConfig.model_validate(cfg))
        try:
            check_admin_config(app)
        except AdminConfigError:
            continue
        raise AssertionError(f"{cfg} accepted")
    check_admin_config(AdminApp(control, AdminConfig.model_validate({"auth": False})))


async def test_real_gateway_consumers_config_and_metrics(tmp_path: Path) -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url, plugins=[{"name": "key_auth"}])
        async with run_gateway(cfg) as gw:
            gateway: Gateway = gw.gateway
            path = tmp_path / "portway.yaml"
            path.write_text(yaml.safe_dump(gateway.config.model_dump(mode="json")))
            gateway.config_path = path
            control = RuntimeControl(gateway)
            metrics = Metrics(include_default_registry=False)
            metrics.set_upstreams_source(control.upstreams)
            app = AdminApp(control, AdminConfig.model_validate({"token": TOKEN}), metrics=metrics)
            port = free_port()
            server = await serve_admin(app, "127.0.0.1", port)
            base = f"http://127.0.0.1:{port}"
            try:
                status, _, _ = await http_get(gw.url + "/anything")
                assert status == 401
                r = await simple_request(
                    "POST",
                    base + "/consumers",
                    body=b'{"username": "svc"}',
                    headers=[*AUTH, ("content-type", "application/json")],
                )
                assert r.status == 201, r.body
                r = await simple_request(
                    "POST", base + "/consumers/svc/credentials/key_auth", headers=AUTH
                )
                assert r.status == 201, r.body
                key = orjson.loads(r.body)["generated_key"]
                status, _, body = await http_get(gw.url + "/anything", headers=[("apikey", key)])
                assert status == 200, body
                # write back: the file now holds the consumer, hashed
                r = await simple_request(
                    "PUT",
                    base + "/config?write_back=true",
                    body=control.config_text().encode(),
                    headers=[*AUTH, ("content-type", "application/yaml")],
                )
                assert r.status == 200 and orjson.loads(r.body)["written"] is True
                written = path.read_text()
                assert "key_sha256" in written and key not in written
                # a bad config changes nothing
                r = await simple_request(
                    "PUT",
                    base + "/config",
                    body=b"routes: [{name: x, upstream: missing}]",
                    headers=[*AUTH, ("content-type", "application/yaml")],
                )
                assert r.status == 422 and orjson.loads(r.body)["errors"]
                status, _, _ = await http_get(gw.url + "/anything", headers=[("apikey", key)])
                assert status == 200
                # reload from the file
                r = await simple_request("POST", base + "/reload", headers=AUTH)
                assert r.status == 200, r.body
                r = await simple_request("GET", base + "/status", headers=AUTH)
                st = orjson.loads(r.body)
                assert st["last_reload"]["result"] == "ok" and st["config_hash"]
                r = await simple_request("GET", base + "/upstreams", headers=AUTH)
                targets = orjson.loads(r.body)["data"][0]["targets"]
                assert targets[0]["healthy"] is True
                r = await simple_request("GET", base + "/metrics", headers=AUTH)
                assert b"portway_upstream_target_up{" in r.body
            finally:
                server.close()


async def test_start_admin_over_worker_gateway() -> None:
    from portway.admin.server import start_admin

    async with run_upstream() as up, run_gateway(simple_config(up.url)) as gw:
        assert await start_admin(gw.gateway, AdminConfig.model_validate({})) is None
        port = free_port()
        cfg = AdminConfig.model_validate({"token": TOKEN, "address": f"127.0.0.1:{port}"})
        server = await start_admin(gw.gateway, cfg)
        assert server is not None
        try:
            await http_get(gw.url + "/x")
            r = await simple_request("GET", f"http://127.0.0.1:{port}/routes", headers=AUTH)
            assert r.status == 200 and orjson.loads(r.body)["data"][0]["name"] == "r"
            r = await simple_request("GET", f"http://127.0.0.1:{port}/metrics", headers=AUTH)
            assert r.status == 200 and b"portway_upstream_target_up{target=" in r.body
        finally:
            server.close()

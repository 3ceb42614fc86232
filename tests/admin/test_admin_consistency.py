"""Admin API consistency over a real gateway and a real config file: a consumer GET can be
PUT back, PUT keeps credentials unless it replaces them, write_back keeps the operator's file
(comments, layout, omitted defaults) and changes only what changed, and POST /reload warns
about API-made consumers it drops."""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from portway.admin.app import AdminApp
from portway.admin.control import RuntimeControl
from portway.admin.server import serve_admin
from portway.config.loader import load_config
from portway.config.schema import AdminConfig
from portway.http.client import SimpleResponse as ClientResponse
from portway.http.client import simple_request
from portway.server.worker import Worker
from tests.admin.conftest import AUTH, TOKEN
from tests.helpers import free_port, http_get, run_upstream

FILE = """\
# Portway for the shop (16 lines, hand-written)
listeners:
  - {{name: public, address: "127.0.0.1:{port}"}}   # the only listener
admin: {{enabled: false}}
upstreams:
  users:
    targets: [{{url: "{up}"}}]
    timeouts: {{connect: 2s, read: 30s, total: 60s}}
routes:
  - name: users                 # users API
    match: {{paths: ["/users"]}}
    upstream: users
    plugins: [{{name: key_auth}}]
consumers:
  - username: alice            # ops team
    credentials: {{key_auth: [{{key: alice-key-0123456789}}]}}
"""


class Admin:
    def __init__(self, base: str) -> None:
        self.base = base

    async def call(self, method: str, path: str, body: Any = None) -> ClientResponse:
        headers = list(AUTH)
        data = b""
        if body is not None:
            headers.append(("content-type", "application/json"))
            data = orjson.dumps(body)
        return await simple_request(method, self.base + path, headers=headers, body=data)


@asynccontextmanager
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Admin, str, Path]]:
    async with run_upstream() as up:
        port = free_port()
        path = tmp_path / "portway.yaml"
        path.write_text(FILE.format(port=port, up=up.url))
        w = Worker(load_config(path), config_path=path)
        await w.start()
        assert w.gateway is not None
        app = AdminApp(RuntimeControl(w.gateway), AdminConfig.model_validate({"token": TOKEN}))
        admin_port = free_port()
        server = await serve_admin(app, "127.0.0.1", admin_port)
        try:
            yield Admin(f"http://127.0.0.1:{admin_port}"), f"http://127.0.0.1:{port}", path
        finally:
            server.close()
            await w.shutdown()


async def test_get_put_round_trip_and_credentials_kept(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (admin, url, _):
        r = await admin.call("GET", "/consumers/alice")
        got = orjson.loads(r.body)
        r = await admin.call("PUT", "/consumers/alice", got)  # what GET gave, sent back
        assert r.status == 200, r.body
        assert orjson.loads(r.body) == got
        key = [("apikey", "alice-key-0123456789")]
        assert (await http_get(url + "/users", headers=key))[0] == 200

        # a PUT without credentials keeps them
        r = await admin.call("PUT", "/consumers/alice", {"groups": ["ops"]})
        assert r.status == 200, r.body
        view = orjson.loads(r.body)
        assert view["groups"] == ["ops"] and view["credentials"] == got["credentials"]
        assert (await http_get(url + "/users", headers=key))[0] == 200

        # the list form: keep the listed id, add an item without one
        creds = [*got["credentials"], {"kind": "key_auth", "key": "second-key-0123456789"}]
        r = await admin.call("PUT", "/consumers/alice", {"credentials": creds})
        assert r.status == 200, r.body
        assert len(orjson.loads(r.body)["credentials"]) == 2
        for k in ("alice-key-0123456789", "second-key-0123456789"):
            assert (await http_get(url + "/users", headers=[("apikey", k)]))[0] == 200

        # a mapping replaces them all; an unknown id or another username is refused
        r = await admin.call(
            "PUT", "/consumers/alice", {"credentials": {"key_auth": [{"key": "only-key-0123456"}]}}
        )
        assert r.status == 200 and len(orjson.loads(r.body)["credentials"]) == 1
        assert (await http_get(url + "/users", headers=key))[0] == 401
        r = await admin.call(
            "PUT", "/consumers/alice", {"credentials": [{"kind": "key_auth", "id": "nope"}]}
        )
        assert r.status == 422
        r = await admin.call("PUT", "/consumers/alice", {"username": "bob"})
        assert r.status == 422


async def test_write_back_keeps_the_file_and_changes_only_what_changed(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (admin, _url, path):
        before = path.read_text()
        r = await admin.call(
            "POST",
            "/consumers?write_back=true",
            {"username": "bob", "credentials": {"key_auth": [{"key": "bob-key-0123456789"}]}},
        )
        assert r.status == 201, r.body
        after = path.read_text()
        diff = [
            ln
            for ln in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="")
            if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---"))
        ]
        assert diff and all(ln.startswith("+") for ln in diff), diff  # only additions
        assert "bob" in "\n".join(diff) and "bob-key" not in after  # stored hashed
        assert "# ops team" in after and "# the only listener" in after
        assert len(after.splitlines()) <= len(before.splitlines()) + 6

        # the whole config as GET /config shows it (defaults spelled out), one value changed
        r = await admin.call("GET", "/config")
        cfg = orjson.loads(r.body)
        cfg["upstreams"]["users"]["timeouts"]["read"] = 10.0
        r = await admin.call("PUT", "/config?write_back=true", cfg)
        assert r.status == 200, r.body
        final = path.read_text()
        changed = [
            (a, b) for a, b in zip(after.splitlines(), final.splitlines(), strict=False) if a != b
        ]
        assert len(final.splitlines()) == len(after.splitlines())
        assert changed == [
            (
                "    timeouts: {connect: 2s, read: 30s, total: 60s}",
                "    timeouts: {connect: 2s, read: 10.0, total: 60s}",
            )
        ]
        assert load_config(path).upstreams["users"].timeouts.read == 10.0


async def test_reload_warns_about_api_made_consumers_it_drops(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (admin, _url, _):
        r = await admin.call("POST", "/consumers", {"username": "temp"})
        assert r.status == 201
        r = await admin.call("PUT", "/consumers/alice", {"groups": ["x"]})
        assert r.status == 200
        r = await admin.call("POST", "/reload")
        assert r.status == 200, r.body
        warnings = orjson.loads(r.body)["warnings"]
        assert any("'temp'" in w and "dropped" in w for w in warnings), warnings
        assert any("'alice'" in w for w in warnings), warnings
        assert (await admin.call("GET", "/consumers/temp")).status == 404
        # nothing pending any more: a second reload has nothing to say
        r = await admin.call("POST", "/reload")
        assert orjson.loads(r.body)["warnings"] == []


async def test_validate_and_put_report_credential_errors_with_their_line(tmp_path: Path) -> None:
    async with gateway(tmp_path) as (admin, _url, path):
        bad = path.read_text().replace(
            "{key_auth: [{key: alice-key-0123456789}]}",
            "{jwt: [{issuer: a, secret: '0123456789abcdef'}], basic_auth: [{password: x}]}",
        )
        for method, where in (("POST", "/config/validate"), ("PUT", "/config")):
            r = await simple_request(
                method,
                admin.base + where,
                headers=[*AUTH, ("content-type", "application/yaml")],
                body=bad.encode(),
            )
            assert r.status == 422, r.body
            errors = orjson.loads(r.body)["errors"]
            by_path = {e["path"]: e for e in errors}
            assert by_path["consumers[0].credentials.jwt[0]"]["line"] == 16
            assert "32 bytes" in by_path["consumers[0].credentials.jwt[0]"]["message"]
            assert "consumers[0].credentials.basic_auth[0].password" in by_path

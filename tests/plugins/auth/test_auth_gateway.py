"""End to end through a real gateway: identity plugins bound on routes and globally."""

from __future__ import annotations

import base64
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import orjson
from argon2 import PasswordHasher
from cryptography import x509

from portway.http.client import simple_request
from tests.helpers import run_gateway, run_upstream
from tests.plugins._identity.kit import (
    HS_SECRET,
    claims,
    forge,
    make_cert,
    mint,
    pem_cert,
    pem_private,
)

ARGON = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("pw")
CONSUMERS = [
    {
        "username": "alice",
        "groups": ["admin"],
        "credentials": {
            "key_auth": [{"key": "alice-key"}],
            "basic_auth": [{"password_hash": ARGON}],
            "jwt": [{"issuer": "alice-app", "secret": HS_SECRET}],
            "mtls": [{"subject": "CN=alice,O=Acme"}],
        },
    },
    {"username": "bob", "groups": ["users"], "credentials": {"key_auth": [{"key": "bob-key"}]}},
]


def config(upstream: str) -> dict[str, Any]:
    def route(name: str, path: str, plugins: list[dict[str, Any]]) -> dict[str, Any]:
        return {"name": name, "match": {"paths": [path]}, "upstream": "u", "plugins": plugins}

    return {
        "upstreams": {"u": {"targets": [{"url": upstream}]}},
        "consumers": CONSUMERS,
        "plugins": [{"name": "identity_headers", "config": {"claims": {"sub": "X-User-ID"}}}],
        "routes": [
            route("key", "/key", [{"name": "key_auth"}]),
            route(
                "admin",
                "/admin",
                [{"name": "key_auth"}, {"name": "acl", "config": {"allow": ["admin"]}}],
            ),
            route("basic", "/basic", [{"name": "basic_auth"}]),
            route(
                "jwt",
                "/jwt",
                [{"name": "jwt"}, {"name": "scopes", "config": {"required": ["read"]}}],
            ),
            route("any", "/any", [{"name": "auth", "config": {"any": ["jwt", "key_auth"]}}]),
            route("open", "/open", []),
            route("mtls", "/mtls", [{"name": "mtls_auth"}]),
        ],
    }


async def get(url: str, headers: list[tuple[str, str]] | None = None) -> tuple[int, Any, Any]:
    r = await simple_request("GET", url, headers=headers)
    body = orjson.loads(r.body) if r.body else None
    return r.status, r.headers, body


def upstream_headers(body: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in body["headers"]:
        out.setdefault(k, []).append(v)
    return out


async def test_end_to_end() -> None:
    async with run_upstream() as up, run_gateway(config(up.url)) as gw:
        # key_auth: identity headers reach the upstream, spoofed ones do not, the key is hidden
        s, _, body = await get(
            gw.url + "/key", [("apikey", "alice-key"), ("X-Consumer-Username", "bob")]
        )
        assert s == 200
        h = upstream_headers(body)
        assert h["x-consumer-username"] == ["alice"] and "apikey" not in h
        # key_auth declares sync_hooks: with a pooled upstream connection, the task-free path
        app = gw.worker.app
        assert app is not None
        before = app.fast_requests
        s, _, body = await get(gw.url + "/key", [("apikey", "bob-key")])
        assert s == 200 and upstream_headers(body)["x-consumer-username"] == ["bob"]
        assert app.fast_requests == before + 1

        s, headers, body = await get(gw.url + "/key", [("apikey", "wrong")])
        assert s == 401 and headers.get("www-authenticate") == 'Key realm="portway"'
        assert body["code"] == "unauthorized" and body["error"] == "invalid credentials"
        assert headers.get("content-type") == "application/json"

        # acl
        assert (await get(gw.url + "/admin", [("apikey", "alice-key")]))[0] == 200
        s, _, body = await get(gw.url + "/admin", [("apikey", "bob-key")])
        assert s == 403 and body["code"] == "forbidden"

        # basic
        cred = base64.b64encode(b"alice:pw").decode()
        assert (await get(gw.url + "/basic", [("authorization", f"Basic {cred}")]))[0] == 200
        s, headers, _ = await get(gw.url + "/basic")
        assert s == 401 and headers.get("www-authenticate") == 'Basic realm="portway"'

        # jwt + scopes + claim header from the global identity_headers binding
        good = mint(claims(iss="alice-app", sub="u-42", scope="read"), HS_SECRET, "HS256")
        s, _, body = await get(
            gw.url + "/jwt", [("authorization", f"Bearer {good}"), ("x-user-id", "spoof")]
        )
        assert s == 200 and upstream_headers(body)["x-user-id"] == ["u-42"]
        # jwt (consumers' HS keys: nothing to fetch) and scopes: the task-free path
        before = app.fast_requests
        s, _, body = await get(gw.url + "/jwt", [("authorization", f"Bearer {good}")])
        assert s == 200 and upstream_headers(body)["x-user-id"] == ["u-42"]
        assert app.fast_requests == before + 1
        noscope = mint(claims(iss="alice-app"), HS_SECRET, "HS256")
        s, headers, body = await get(gw.url + "/jwt", [("authorization", f"Bearer {noscope}")])
        assert s == 403 and "insufficient_scope" in headers.get("www-authenticate", "")
        none = forge({"alg": "none"}, claims(iss="alice-app", scope="read"))
        s, headers, body = await get(gw.url + "/jwt", [("authorization", f"Bearer {none}")])
        assert s == 401 and body["error"] == "invalid token"

        # any: one WWW-Authenticate per scheme
        s, headers, _ = await get(gw.url + "/any")
        assert s == 401
        assert headers.get_all("www-authenticate") == [
            'Bearer realm="portway"',
            'Key realm="portway"',
        ]
        assert (await get(gw.url + "/any", [("apikey", "bob-key")]))[0] == 200

        # a route without auth still cannot receive spoofed identity headers
        s, _, body = await get(gw.url + "/open", [("x-consumer-id", "x"), ("x-user-id", "y")])
        h = upstream_headers(body)
        assert s == 200 and "x-consumer-id" not in h and "x-user-id" not in h

        # no TLS on this listener: mtls_auth has no certificate to read
        assert (await get(gw.url + "/mtls"))[0] == 401


async def test_mtls_through_a_tls_listener(tmp_path: Path) -> None:
    ca, ca_key = make_cert("CA", None, None, ca=True)
    srv, srv_key = make_cert(
        "gw", ca_key, ca.subject, sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cli, cli_key = make_cert("alice", ca_key, ca.subject, org="Acme")
    for name, data in [
        ("ca.pem", pem_cert(ca)),
        ("srv.pem", pem_cert(srv)),
        ("srv.key", pem_private(srv_key)),
        ("cli.pem", pem_cert(cli)),
        ("cli.key", pem_private(cli_key)),
    ]:
        (tmp_path / name).write_bytes(data)
    cfg = config("http://127.0.0.1:1")
    tls = {
        "cert": str(tmp_path / "srv.pem"),
        "key": str(tmp_path / "srv.key"),
        "client_ca": str(tmp_path / "ca.pem"),
        "client_cert": "optional",
    }
    async with run_upstream() as up:
        cfg["upstreams"]["u"]["targets"] = [{"url": up.url}]
        cfg["listeners"] = [{"name": "public", "tls": tls}]
        async with run_gateway(cfg) as gw:
            import asyncio

            cctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
            cctx.load_cert_chain(str(tmp_path / "cli.pem"), str(tmp_path / "cli.key"))

            async def call(ctx: ssl.SSLContext) -> bytes:
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.port, ssl=ctx)
                writer.write(b"GET /mtls HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
                data = await asyncio.wait_for(reader.read(-1), 5)
                writer.close()
                return data

            data = await call(cctx)
            assert data.startswith(b"HTTP/1.1 200"), data[:200]
            assert b"alice" in data
            anon = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
            assert (await call(anon)).startswith(b"HTTP/1.1 401")

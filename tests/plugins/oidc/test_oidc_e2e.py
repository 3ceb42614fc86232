"""End to end: the gateway's ``oidc`` plugin against a real OpenID provider (oidc-provider).

Each test drives the provider's own login and consent pages with a cookie-keeping HTTP
client, through the gateway, to a real upstream that echoes what it received.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from portway.http.client import simple_request
from tests.helpers import run_upstream
from tests.plugins.oidc.conftest import (
    Browser,
    Idp,
    Reply,
    gateway_config,
    oidc_config,
    run_gateway_on,
)


def upstream_headers(reply: Reply) -> dict[str, str]:
    assert reply.status == 200, (reply.status, reply.body[:300])
    return {k: v for k, v in reply.json()["headers"]}


async def login(b: Browser, idp: Idp, path: str = "/app", user: str = "alice") -> Reply:
    """Sign in from ``path``; returns the gateway's answer to the callback."""
    r = await b.get(idp.gateway + path)
    assert r.status == 302, (r.status, r.body[:200])
    assert r.location.startswith(idp.issuer + "/auth?")
    back = await b.provider_login(r, user)
    assert back.location.startswith(idp.gateway + "/oauth2/callback?")
    return await b.get(back.location)


def plugins(idp: Idp, **over: Any) -> list[dict[str, Any]]:
    return [{"name": "oidc", "config": oidc_config(idp, **over)}]


async def test_browser_login_reaches_upstream_with_identity(idp: Idp) -> None:
    async with (
        run_upstream() as up,
        run_gateway_on(idp.gateway_port, gateway_config(up.url, plugins(idp))),
    ):
        b = Browser()
        r = await b.get(idp.gateway + "/app/page?x=1")
        assert r.status == 302
        q = parse_qs(urlsplit(r.location).query)
        assert q["response_type"] == ["code"] and q["client_id"] == ["portal"]
        assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
        assert q["redirect_uri"] == [idp.gateway + "/oauth2/callback"]
        assert q["state"][0] and q["nonce"][0] and q["state"] != q["nonce"]
        assert "pw_session_login" in r.headers.get("set-cookie", "")
        back = await b.provider_login(r)
        cb = await b.get(back.location)
        assert cb.status == 302 and cb.location == idp.gateway + "/app/page?x=1"
        session_cookies = [
            c for c in cb.headers.get_all("set-cookie") if c.startswith("pw_session=")
        ]
        assert len(session_cookies) == 1
        attrs = [a.strip() for a in session_cookies[0].split(";")]
        assert {"HttpOnly", "Secure", "SameSite=Lax", "Path=/"} <= set(attrs)
        # the login cookie is spent
        assert any(c.startswith("pw_session_login=;") for c in cb.headers.get_all("set-cookie"))

        forged = [
            ("x-consumer-id", "mallory"),
            ("x-consumer-username", "mallory"),
            ("x-user-email", "mallory@evil.test"),
            ("x-id-token", "forged"),
        ]
        r = await b.get(cb.location, headers=forged)
        h = upstream_headers(r)
        assert h["x-consumer-id"] == "alice" and h["x-consumer-username"] == "alice"
        assert h["x-user-email"] == "alice@example.test"
        assert h["authorization"].startswith("Bearer ey")
        assert h["x-id-token"].count(".") == 2 and h["x-id-token"] != "forged"
        assert "pw_session" not in h.get("cookie", "")
        assert len(up.requests) == 1


async def test_unauthenticated_modes_and_xhr(idp: Idp) -> None:
    async with run_upstream() as up:
        async with run_gateway_on(idp.gateway_port, gateway_config(up.url, plugins(idp))):
            b = Browser()
            # XHR and JSON clients get a 401 rather than a redirect they cannot follow
            for hdrs in (
                [("x-requested-with", "XMLHttpRequest")],
                [("accept", "application/json")],
            ):
                r = await simple_request("GET", idp.gateway + "/app", headers=hdrs)
                assert r.status == 401, r.status
                assert orjson.loads(r.body)["code"] == "unauthorized"
                assert r.headers.get("www-authenticate", "").startswith("Bearer")
            r = await simple_request(
                "POST", idp.gateway + "/app", headers=[("accept", "text/html")]
            )
            assert r.status == 401
            r = await b.get(idp.gateway + "/app")
            assert r.status == 302
        async with run_gateway_on(
            idp.gateway_port, gateway_config(up.url, plugins(idp, unauthenticated="401"))
        ):
            r = await Browser().get(idp.gateway + "/app")
            assert r.status == 401
        async with run_gateway_on(
            idp.gateway_port, gateway_config(up.url, plugins(idp, unauthenticated="pass"))
        ):
            r = await Browser().get(idp.gateway + "/app", headers=[("x-consumer-id", "forged")])
            h = upstream_headers(r)
            assert "x-consumer-id" not in h


async def test_logout_clears_session_and_ends_it_at_the_provider(idp: Idp) -> None:
    async with (
        run_upstream() as up,
        run_gateway_on(idp.gateway_port, gateway_config(up.url, plugins(idp))),
    ):
        b = Browser()
        cb = await login(b, idp)
        assert (await b.get(cb.location)).status == 200
        stolen = dict(b.cookies(idp.gateway))
        r = await b.get(idp.gateway + "/logout")
        assert r.status == 302
        end = urlsplit(r.location)
        assert r.location.startswith(idp.issuer + "/session/end?")
        q = parse_qs(end.query)
        assert q["post_logout_redirect_uri"] == [idp.gateway + "/"]
        assert q["id_token_hint"][0].count(".") == 2
        assert "pw_session" not in b.cookies(idp.gateway)
        # RP-initiated logout at the provider: its confirmation form, then back to the gateway
        r = await b.get(r.location)
        assert r.status == 200
        # the browser no longer has a session: a new login starts
        r = await b.get(idp.gateway + "/app")
        assert r.status == 302 and r.location.startswith(idp.issuer)
        # with the cookie store, a copy of the old cookie still opens the session until its
        # timeouts (documented); the Redis store revokes it (test_oidc_redis.py)
        assert "pw_session" in stolen


async def test_tampered_cookie_is_refused_and_cleared(idp: Idp) -> None:
    async with (
        run_upstream() as up,
        run_gateway_on(idp.gateway_port, gateway_config(up.url, plugins(idp))),
    ):
        b = Browser()
        cb = await login(b, idp)
        jar = b.cookies(idp.gateway)
        value = jar["pw_session"].value
        raw = bytearray(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        raw[len(raw) // 2] ^= 0x01
        jar["pw_session"].value = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        b.accept = "application/json"
        r = await b.get(cb.location)
        assert r.status == 401
        assert any(c.startswith("pw_session=;") for c in r.headers.get_all("set-cookie"))
        assert "pw_session" not in jar
        assert up.requests == []


async def test_replayed_state_is_refused(idp: Idp) -> None:
    async with (
        run_upstream() as up,
        run_gateway_on(idp.gateway_port, gateway_config(up.url, plugins(idp))),
    ):
        b = Browser()
        r = await b.get(idp.gateway + "/app")
        login_cookie = b.cookies(idp.gateway)["pw_session_login"].value
        back = await b.provider_login(r)
        assert (await b.get(back.location)).status == 302
        # the same callback URL again, with the cookie as it was before the first use
        attacker = Browser()
        attacker.cookies(idp.gateway)["pw_session_login"] = b.cookies(idp.gateway).get(
            "pw_session_login"
        ) or type(next(iter(b.cookies(idp.gateway).values())))(login_cookie, "/", {})
        attacker.cookies(idp.gateway)["pw_session_login"].value = login_cookie
        r = await attacker.get(back.location)
        assert r.status == 400, (r.status, r.body[:200])
        assert b"already used" in r.body and b"<html" in r.body
        assert "pw_session" not in attacker.cookies(idp.gateway)
        # without any login cookie (a forged callback): refused too, never a redirect
        r = await Browser(accept="application/json").get(back.location)
        assert r.status == 400 and r.json()["code"] == "invalid_state"
        assert up.requests == []


async def test_wrong_nonce_is_refused(idp: Idp) -> None:
    async with (
        run_upstream() as up,
        run_gateway_on(idp.gateway_port, gateway_config(up.url, plugins(idp))),
    ):
        b = Browser()
        r = await b.get(idp.gateway + "/app")
        loc = r.location
        q = parse_qs(urlsplit(loc).query)
        r.headers.set("location", loc.replace("nonce=" + q["nonce"][0], "nonce=attacker-chosen"))
        back = await b.provider_login(r)
        r = await b.get(back.location)
        assert r.status == 401, (r.status, r.body[:200])
        assert b"identity token was not valid" in r.body
        assert "pw_session" not in b.cookies(idp.gateway)
        assert up.requests == []


async def test_open_redirect_attempts_return_to_same_origin_paths(idp: Idp) -> None:
    async with (
        run_upstream() as up,
        run_gateway_on(idp.gateway_port, gateway_config(up.url, plugins(idp))),
    ):
        for path, expected in (
            ("//evil.example/x", "/evil.example/x"),
            ("/%2F%2Fevil.example", None),
        ):
            b = Browser()
            r = await b.get(idp.gateway + path)
            if expected is None:
                assert r.status == 400  # encoded slashes never reach the plugin
                continue
            back = await b.provider_login(r)
            cb = await b.get(back.location)
            assert cb.status == 302
            assert cb.headers.get("location") == expected
            assert urlsplit(cb.location).netloc == urlsplit(idp.gateway).netloc
    assert up is not None


async def test_expired_session_needs_a_new_login(idp: Idp) -> None:
    # refresh off: the provider's tokens (5 min access, 1 h ID) would expire on the way
    over = {"session": {"idle_timeout": "10m", "absolute_timeout": "1h"}, "refresh": False}
    cfg = gateway_config("", plugins(idp, **over))
    async with run_upstream() as up:
        cfg["upstreams"]["app"]["targets"] = [{"url": up.url}]
        async with run_gateway_on(idp.gateway_port, cfg) as gw:
            plugin = gw.plugin()
            now = [plugin.clock()]
            plugin.clock = lambda: now[0]
            b = Browser()
            cb = await login(b, idp)
            assert (await b.get(cb.location)).status == 200
            now[0] += 11 * 60  # idle too long
            r = await b.get(cb.location)
            assert r.status == 302 and r.location.startswith(idp.issuer)
            assert "pw_session" not in b.cookies(idp.gateway)
            # absolute timeout: active every 9 minutes, still over after an hour
            b = Browser()
            cb = await login(b, idp)
            for _ in range(6):
                now[0] += 9 * 60
                r = await b.get(cb.location)
                assert r.status == 200
            now[0] += 9 * 60
            r = await b.get(cb.location)
            assert r.status == 302 and r.location.startswith(idp.issuer)


async def test_refresh_before_expiry_once_for_concurrent_requests(idp: Idp) -> None:
    async with (
        run_upstream() as up,
        run_gateway_on(idp.gateway_port, gateway_config(up.url, plugins(idp))) as gw,
    ):
        plugin = gw.plugin()
        b = Browser()
        cb = await login(b, idp)
        first = upstream_headers(await b.get(cb.location))["authorization"]
        real = plugin.clock
        plugin.clock = lambda: real() + 290  # the access token (300 s) is about to expire
        cookie = b._header(cb.location)
        assert cookie is not None
        replies = await asyncio.gather(
            *(simple_request("GET", cb.location, headers=[("cookie", cookie)]) for _ in range(8))
        )
        assert plugin.refreshes == 1
        tokens = set()
        for r in replies:
            assert r.status == 200
            tokens.add(dict(orjson.loads(r.body)["headers"])["authorization"])
            assert any(c.startswith("pw_session=") for c in r.headers.get_all("set-cookie"))
        assert len(tokens) == 1 and first not in tokens
        b._store(cb.location, replies[0].headers)
        h = upstream_headers(await b.get(cb.location))
        assert h["authorization"] in tokens and plugin.refreshes == 1


async def test_api_client_with_bearer_token_on_the_same_route(idp: Idp) -> None:
    async with (
        run_upstream() as up,
        run_gateway_on(idp.gateway_port, gateway_config(up.url, plugins(idp))),
    ):
        basic = base64.b64encode(b"api-client:api-client-secret").decode()
        r = await simple_request(
            "POST",
            idp.issuer + "/token",
            headers=[
                ("authorization", "Basic " + basic),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            body=b"grant_type=client_credentials&scope=api&resource=urn%3Aportway%3Aapi",
        )
        assert r.status == 200, r.body
        token = orjson.loads(r.body)["access_token"]
        r = await simple_request(
            "GET", idp.gateway + "/app", headers=[("authorization", f"Bearer {token}")]
        )
        assert r.status == 200, r.body
        h = dict(orjson.loads(r.body)["headers"])
        assert h["x-consumer-id"] == "api-client"
        assert h["authorization"] == f"Bearer {token}"
        # a tampered token and a foreign token are refused with a Bearer challenge
        bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        r = await simple_request(
            "GET", idp.gateway + "/app", headers=[("authorization", f"Bearer {bad}")]
        )
        assert r.status == 401 and 'error="invalid_token"' in r.headers.get("www-authenticate", "")
        assert len(up.requests) == 1


async def test_private_key_jwt_client_authentication(idp: Idp, tmp_path: Path) -> None:
    over = {
        "client_id": "portal-pkjwt",
        "client_secret": None,
        "client_auth": "private_key_jwt",
        "private_key_file": idp.client_key_file(tmp_path),
    }
    cfg = oidc_config(idp, **over)
    del cfg["client_secret"]
    async with (
        run_upstream() as up,
        run_gateway_on(idp.gateway_port, gateway_config(up.url, [{"name": "oidc", "config": cfg}])),
    ):
        b = Browser()
        cb = await login(b, idp, "/pk", user="dave")
        assert cb.status == 302, (cb.status, cb.body[:300])
        h = upstream_headers(await b.get(cb.location))
        assert h["x-consumer-id"] == "dave"


async def test_same_site_strict_continues_with_a_page(idp: Idp) -> None:
    strict = {"session": {"cookie": {"name": "pw_session", "same_site": "strict"}}}
    async with (
        run_upstream() as up,
        run_gateway_on(idp.gateway_port, gateway_config(up.url, plugins(idp, **strict))),
    ):
        b = Browser()
        r = await b.get(idp.gateway + "/s?q=1")
        # the login cookie must come back on the provider's cross-site redirect: Lax
        assert "SameSite=Lax" in r.headers.get("set-cookie", "")
        back = await b.provider_login(r)
        cb = await b.get(back.location)
        # not a redirect (the browser would not send a Strict cookie on it) but a page that
        # moves on by itself, from the gateway's own origin
        assert cb.status == 200 and b'http-equiv="refresh"' in cb.body
        assert b'url=/s?q=1"' in cb.body
        session = next(c for c in cb.headers.get_all("set-cookie") if c.startswith("pw_session="))
        assert "SameSite=Strict" in session
        assert upstream_headers(await b.get(idp.gateway + "/s?q=1"))["x-consumer-id"] == "alice"


async def test_secret_rotation(idp: Idp) -> None:
    old, new = "o" * 32, "n" * 32
    async with run_upstream() as up:

        def cfg(secrets: list[str]) -> dict[str, Any]:
            return gateway_config(
                up.url, plugins(idp, session={"secret": None, "secrets": secrets})
            )

        async with run_gateway_on(idp.gateway_port, _drop_none(cfg([old]))) as gw:
            b = Browser()
            cb = await login(b, idp)
            assert (await b.get(cb.location)).status == 200
            # rotation: the new secret first, the old one still opens existing sessions
            await gw.worker.gateway.apply(_gateway_cfg(idp, _drop_none(cfg([new, old]))))
            assert (await b.get(cb.location)).status == 200
            b2 = Browser()
            cb2 = await login(b2, idp, user="erin")
            # once the old secret is dropped, sessions sealed with it are over; new ones live
            await gw.worker.gateway.apply(_gateway_cfg(idp, _drop_none(cfg([new]))))
            r = await b.get(cb.location)
            assert r.status == 302 and r.location.startswith(idp.issuer)
            assert upstream_headers(await b2.get(cb2.location))["x-consumer-id"] == "erin"


def _drop_none(cfg: dict[str, Any]) -> dict[str, Any]:
    session = cfg["plugins"][0]["config"]["session"]
    for k in [k for k, v in session.items() if v is None]:
        del session[k]
    return cfg


def _gateway_cfg(idp: Idp, cfg: dict[str, Any]) -> Any:
    from tests.helpers import _config

    return _config(cfg, idp.gateway_port)


async def test_large_session_is_chunked_over_cookies(idp: Idp) -> None:
    cfg = plugins(idp, groups_claim="groups")
    async with run_upstream() as up, run_gateway_on(idp.gateway_port, gateway_config(up.url, cfg)):
        b = Browser()
        cb = await login(b, idp, "/big", user="big-bertha")
        chunks = [c for c in cb.headers.get_all("set-cookie") if c.startswith("pw_session")]
        names = [c.split("=", 1)[0] for c in chunks if not c.startswith("pw_session_login")]
        assert names[:2] == ["pw_session", "pw_session.1"], names
        assert all(len(c) < 4096 for c in chunks)
        h = upstream_headers(await b.get(cb.location))
        assert h["x-consumer-id"] == "big-bertha"
        assert "group-with-a-long-name-119" in h["x-consumer-groups"]
        # logout clears every chunk
        r = await b.get(idp.gateway + "/logout")
        cleared = [c.split("=", 1)[0] for c in r.headers.get_all("set-cookie") if "Max-Age=0" in c]
        assert set(names) <= set(cleared)
        assert not any(n.startswith("pw_session") for n in b.cookies(idp.gateway))

"""``cors`` through a real gateway and a real upstream, as a browser would talk to it."""

from __future__ import annotations

import pytest

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from portway.http.client import simple_request
from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.plugins.cors.config import OriginMatcher
from tests.helpers import ServingPath, run_gateway, run_upstream

APP = "https://app.example.com"
CORS = {
    "name": "cors",
    "config": {
        "allow_origins": [APP, "https://*.example.org"],
        "allow_methods": ["GET", "POST", "PUT", "DELETE"],
        "allow_headers": ["authorization", "content-type"],
        "expose_headers": ["x-request-id"],
        "allow_credentials": True,
        "max_age": "10m",
    },
}


async def upstream_handler(req: Request) -> Response:
    h = Headers()
    h.set("content-type", "application/json")
    h.set("vary", "Accept-Language")
    h.set("access-control-allow-origin", "*")  # an upstream's own CORS answer is replaced
    h.set("x-request-id", "up-1")
    return Response(200, h, b'{"ok":true}')


def config(up_url: str, cors: dict[str, object] = CORS, **route: object) -> dict[str, object]:
    r: dict[str, object] = {
        "name": "api",
        "match": {"paths": ["/api"], "methods": ["GET", "PUT"]},
        "upstream": "u",
        "plugins": [cors],
    }
    r.update(route)
    return {"upstreams": {"u": {"targets": [{"url": up_url}]}}, "routes": [r]}


def vary(h: Headers) -> set[str]:
    return {t.strip().lower() for v in h.get_all("vary") for t in v.split(",")}


async def test_browser_preflight_then_credentialed_request() -> None:
    async with run_upstream(upstream_handler) as up, run_gateway(config(up.url)) as gw:
        # the route lists GET and PUT only: the preflight routes by the method it announces
        pre = await simple_request(
            "OPTIONS",
            gw.url + "/api/items/1",
            headers=[
                ("origin", APP),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "authorization,content-type"),
            ],
        )
        assert up.requests == []  # answered by the gateway
        assert pre.status == 204 and pre.body == b""
        h = pre.headers
        assert h.get("access-control-allow-origin") == APP
        assert h.get("access-control-allow-credentials") == "true"
        assert h.get("access-control-allow-methods") == "GET, POST, PUT, DELETE"
        assert h.get("access-control-allow-headers") == "authorization, content-type"
        assert h.get("access-control-max-age") == "600"
        assert "origin" in vary(h)
        assert h.get("access-control-allow-private-network") is None

        got = await simple_request(
            "PUT",
            gw.url + "/api/items/1",
            headers=[("origin", APP), ("cookie", "session=1"), ("content-type", "text/plain")],
            body=b"x",
        )
        assert got.status == 200 and got.body == b'{"ok":true}'
        assert len(up.requests) == 1
        h = got.headers
        assert h.get_all("access-control-allow-origin") == [APP]
        assert h.get("access-control-allow-credentials") == "true"
        assert h.get("access-control-expose-headers") == "x-request-id"
        assert vary(h) == {"accept-language", "origin"}


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("https://a.example.org", True),
        ("https://a.b.example.org", True),
        ("https://example.org", False),
        ("https://evil-example.org", False),
        ("https://example.org.evil.com", False),
        ("https://a.example.org.evil.com", False),
        ("http://a.example.org", False),  # another scheme is another origin
        ("https://a.example.org:8443", False),  # and so is another port
        ("https://app.example.com.evil.com", False),
        ("null", False),
    ],
)
async def test_origins_matched_exactly(origin: str, allowed: bool, path: ServingPath) -> None:
    async with (
        run_upstream(upstream_handler) as up,
        run_gateway(path.config(config(up.url))) as gw,
    ):
        await path.prepare(gw, route="api")
        r = await simple_request("GET", gw.url + "/api", headers=[("origin", origin)])
        pre = await simple_request(
            "OPTIONS",
            gw.url + "/api",
            headers=[("origin", origin), ("access-control-request-method", "GET")],
        )
        # the preflight is the plugin's own answer, on either path
        path.assert_served(2, local=1)
    for h in (r.headers, pre.headers):
        acao = h.get_all("access-control-allow-origin")
        assert acao == ([origin] if allowed else []), origin
        assert (h.get("access-control-allow-credentials") is not None) == allowed
        assert "origin" in vary(h)  # the answer depends on Origin either way
    assert r.status == 200 and pre.status == 204


async def test_gateway_errors_carry_cors_headers() -> None:
    """A 401 from key_auth (after cors: stage edge < authn) is readable by the page."""
    cfg = config("http://127.0.0.1:9", plugins=[CORS, {"name": "key_auth"}])
    cfg["consumers"] = [{"username": "alice", "credentials": {"key_auth": [{"key": "k1"}]}}]
    async with run_gateway(cfg) as gw:
        r = await simple_request("GET", gw.url + "/api", headers=[("origin", APP)])
        # a 502 (nothing listens on port 9) made by the gateway gets them too
        r2 = await simple_request(
            "GET", gw.url + "/api", headers=[("origin", APP), ("apikey", "k1")]
        )
    assert r.status == 401 and b"error" in r.body
    assert r.headers.get("access-control-allow-origin") == APP
    assert r.headers.get("access-control-allow-credentials") == "true"
    assert r2.status in (502, 503)
    assert r2.headers.get("access-control-allow-origin") == APP


async def test_wildcards_for_headers_methods_and_private_network() -> None:
    cors = {
        "name": "cors",
        "config": {
            "allow_origins": [APP],
            "allow_methods": ["*"],
            "allow_headers": ["*"],
            "allow_credentials": True,
            "private_network": True,
        },
    }
    async with run_upstream(upstream_handler) as up, run_gateway(config(up.url, cors)) as gw:
        pre = await simple_request(
            "OPTIONS",
            gw.url + "/api",
            headers=[
                ("origin", APP),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "authorization,x-custom"),
                ("access-control-request-private-network", "true"),
            ],
        )
        assert up.requests == []
    h = pre.headers
    # "*" would be a literal name under credentials and never covers Authorization: echo
    assert h.get("access-control-allow-headers") == "authorization,x-custom"
    assert h.get("access-control-allow-methods") == "PUT"
    assert h.get("access-control-allow-private-network") == "true"
    assert {"origin", "access-control-request-headers"} <= vary(h)
    assert h.get("access-control-max-age") is None


async def test_any_origin_without_credentials_sends_star_and_no_vary() -> None:
    cors = {"name": "cors", "config": {"allow_origins": ["*"]}}
    async with run_upstream(upstream_handler) as up, run_gateway(config(up.url, cors)) as gw:
        r = await simple_request("GET", gw.url + "/api", headers=[("origin", "https://x.io")])
        plain = await simple_request("GET", gw.url + "/api")
    assert r.headers.get_all("access-control-allow-origin") == ["*"]
    assert r.headers.get("access-control-allow-credentials") is None
    assert "origin" not in vary(r.headers)
    # no Origin: no CORS answer at all, but the upstream's own "*" was replaced (removed)
    assert plain.headers.get("access-control-allow-origin") is None


async def test_preflight_on_route_without_cors_is_not_answered() -> None:
    cfg = config("http://127.0.0.1:9", plugins=[])
    async with run_gateway(cfg) as gw:
        r = await simple_request(
            "OPTIONS",
            gw.url + "/api",
            headers=[("origin", APP), ("access-control-request-method", "GET")],
        )
    assert r.status == 405 and r.headers.get("access-control-allow-origin") is None


def test_origin_matcher_pure() -> None:
    m = OriginMatcher(["https://*.example.org:8443", "https://app.example.com"])
    assert m.allows("https://a.example.org:8443")
    assert m.allows("HTTPS://APP.EXAMPLE.COM")
    assert not m.allows("https://a.example.org")
    assert not m.allows("https://.example.org:8443")
    assert not m.allows("https://a_b.example.org:8443")
    assert not m.allows("not an origin")


@pytest.mark.parametrize(
    "cfg, key, message",
    [
        ("{allow_origins: ['*'], allow_credentials: true}", "config", "explicit allow_origins"),
        ("{allow_origins: ['https://a.com/path']}", "allow_origins", "invalid origin"),
        ("{allow_origins: ['https://*.a.com'], max_age: 10x}", "max_age", "duration"),
        ("{allow_headers: ['bad header']}", "allow_headers", "invalid header"),
    ],
)
def test_bad_config_rejected_with_path_and_line(cfg: str, key: str, message: str) -> None:
    text = (
        "upstreams: {u: {targets: [{url: 'http://127.0.0.1:9'}]}}\n"
        "routes:\n"
        "  - name: r\n"
        "    upstream: u\n"
        "    plugins:\n"
        f"      - {{name: cors, config: {cfg}}}\n"
    )
    with pytest.raises(ConfigError) as ei:
        load_config_text(text, "c.yaml")
    errs = ei.value.errors
    assert any(
        "routes[0].plugins[0].config" in e.path
        and key in e.path + e.message
        and message in e.message
        and e.line == 6
        for e in errs
    ), errs

"""Pure pieces of the oidc plugin: sealing, chunked cookies, return paths, PKCE, config
errors, token claim checks and key-set parsing."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from joserfc.jwk import RSAKey

from portway.config.loader import ConfigError, load_config_text
from portway.http.headers import Headers
from portway.plugins.oidc.config import OidcConfig, SessionOptions
from portway.plugins.oidc.cookies import CHUNK, parse_cookies, read_chunked
from portway.plugins.oidc.login import s256, safe_return
from portway.plugins.oidc.provider import ProviderKeys, parse_metadata
from portway.plugins.oidc.seal import Sealer
from portway.plugins.oidc.sessions import CookieSessions, Session
from portway.plugins.oidc.tokens import InvalidToken, check_access_token, check_id_token

SECRET = "a" * 32
OLD = "b" * 40


def test_seal_round_trip_rotation_and_purpose() -> None:
    new = Sealer([SECRET, OLD])
    old = Sealer([OLD])
    v = old.seal(b"payload", "session:pw")
    assert new.open(v, "session:pw") == b"payload"  # sealed with the old secret: still opens
    assert new.open(v, "login:pw") is None  # another purpose never opens it
    v2 = new.seal(b"payload", "session:pw")
    assert old.open(v2, "session:pw") is None  # new values use the first secret
    assert Sealer([SECRET]).open(v2, "session:pw") == b"payload"
    assert new.seal(b"x", "p") != new.seal(b"x", "p")  # fresh nonce each time


@pytest.mark.parametrize("mutate", ["flip", "truncate", "garbage", "empty"])
def test_seal_refuses_tampering(mutate: str) -> None:
    s = Sealer([SECRET])
    v = s.seal(b'{"sub":"alice"}', "p")
    raw = bytearray(base64.urlsafe_b64decode(v + "=" * (-len(v) % 4)))
    if mutate == "flip":
        raw[-1] ^= 1
        v = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    elif mutate == "truncate":
        v = v[:-6]
    elif mutate == "garbage":
        v = "!!not base64!!"
    else:
        v = ""
    assert s.open(v, "p") is None


def _opts(**over: Any) -> SessionOptions:
    return SessionOptions.model_validate({"secret": SECRET, **over})


async def test_cookie_sessions_chunk_past_4kb_and_expire_stale_chunks() -> None:
    opts = _opts(cookie={"secure": True})
    store = CookieSessions(opts, Sealer([SECRET]))
    now = time.time()
    big = Session(
        sid="s",
        sub="alice",
        claims={"groups": ["g" * 30] * 200},  # ~7 KB of claims
        created=now,
        seen=now,
        access_token="at",
    )
    set_cookies = await store.save(big, now, present=0)
    assert len(set_cookies) >= 2
    names = [c.split("=", 1)[0] for c in set_cookies]
    assert names[:3] == ["pw_session", "pw_session.1", "pw_session.2"][: len(names)]
    for c in set_cookies:
        value = c.split("=", 1)[1].split(";", 1)[0]
        assert len(value) <= CHUNK
        assert len(c) < 4096
        assert "HttpOnly" in c and "Secure" in c and "SameSite=Lax" in c
    cookie_header = "; ".join(c.split(";", 1)[0] for c in set_cookies)
    cookies = parse_cookies(Headers.from_pairs([("cookie", cookie_header)]))
    loaded, present = await store.load(cookies)
    assert loaded is not None and loaded.claims == big.claims and present == len(set_cookies)
    # a missing middle chunk makes the value unreadable, not a different session
    del cookies["pw_session.1"]
    assert (await store.load(cookies))[0] is None
    # a smaller session expires the chunks it no longer needs
    small = Session(sid="s", sub="alice", claims={}, created=now, seen=now, access_token="at")
    again = await store.save(small, now, present=len(set_cookies))
    assert again[0].startswith("pw_session=") and "Max-Age=0" not in again[0]
    assert all("Max-Age=0" in c for c in again[1:]) and len(again) == len(set_cookies)


def test_read_chunked_counts_present_cookies() -> None:
    value, present = read_chunked({"pw_session": "a", "pw_session.1": "b", "x": "y"}, "pw_session")
    assert value == "ab" and present == 2
    assert read_chunked({}, "pw_session") == (None, 0)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/app?x=1", "/app?x=1"),
        ("/", "/"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("/\tx", "/"),
        ("", "/"),
        (None, "/"),
        ("/" + "a" * 5000, "/"),
    ],
)
def test_safe_return_only_same_origin_paths(target: str | None, expected: str) -> None:
    assert safe_return(target) == expected


def test_pkce_s256_matches_rfc7636_appendix_b() -> None:
    assert s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def _plugin_doc(config: dict[str, Any]) -> str:
    import orjson

    route = {"name": "r", "upstream": "u", "plugins": [{"name": "oidc", "config": config}]}
    doc = {"upstreams": {"u": {"targets": [{"url": "http://127.0.0.1:1"}]}}, "routes": [route]}
    return orjson.dumps(doc).decode()


BASE: dict[str, Any] = {
    "issuer": "https://idp.example.com",
    "client_id": "portal",
    "client_secret": "s",
    "session": {"secret": SECRET},
}


@pytest.mark.parametrize(
    ("over", "fragment"),
    [
        ({"session": {"secret": "short"}}, "at least 32 bytes"),
        ({"session": {"secret": SECRET, "secrets": [SECRET]}}, "exactly one of secret or secrets"),
        ({"session": {"secrets": [SECRET, "short"]}}, "at least 32 bytes"),
        ({"client_secret": None}, "needs client_secret"),
        ({"client_auth": "private_key_jwt"}, "private_key_file"),
        ({"scopes": ["profile"]}, "openid"),
        ({"redirect_path": "https://x/cb"}, "absolute path"),
        ({"unauthenticated": "deny"}, "unauthenticated"),
        ({"issuer": "idp.example.com"}, "issuer"),
        ({"forward": {"claims_headers": {"bad header": "email"}}}, "valid header name"),
        ({"session": {"secret": SECRET, "cookie": {"name": "a.b"}}}, "cookie name"),
        (
            {"session": {"secret": SECRET, "cookie": {"same_site": "none", "secure": False}}},
            "secure",
        ),
        ({"logout": {"redirect_after": "//evil"}}, "redirect_after"),
        ({"sesion": {}}, "sesion"),
    ],
)
def test_bad_config_rejected_with_yaml_path(over: dict[str, Any], fragment: str) -> None:
    cfg = {**BASE, **over}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    with pytest.raises(ConfigError) as ei:
        load_config_text(_plugin_doc(cfg), "c.yaml")
    errors = [str(e) for e in ei.value.errors]
    assert any(fragment in e for e in errors), errors
    assert all("routes[0].plugins[0].config" in e for e in errors), errors


def test_issue_example_config_is_accepted() -> None:
    cfg = OidcConfig.model_validate(
        {
            "issuer": "https://idp.example.com",
            "client_id": "portal",
            "client_secret": "x",
            "redirect_path": "/oauth2/callback",
            "scopes": ["openid", "profile", "email"],
            "pkce": True,
            "session": {
                "store": "cookie",
                "secret": SECRET,
                "cookie": {
                    "name": "pw_session",
                    "same_site": "lax",
                    "secure": True,
                    "domain": None,
                },
                "idle_timeout": "30m",
                "absolute_timeout": "12h",
            },
            "refresh": True,
            "bearer": True,
            "unauthenticated": "redirect",
            "logout": {"path": "/logout", "redirect_after": "/", "end_session": True},
            "forward": {
                "id_token_header": None,
                "access_token_header": "authorization",
                "claims_headers": {"x-user-email": "email"},
            },
            "consumer_claim": "sub",
        }
    )
    assert cfg.session.idle_timeout == 1800 and cfg.session.absolute_timeout == 43200
    assert OidcConfig.model_validate({**BASE, "unauthenticated": "401"}).unauthenticated == "401"


NOW = 1_800_000_000.0
ID_CLAIMS: dict[str, Any] = {
    "iss": "https://idp",
    "aud": "portal",
    "sub": "alice",
    "exp": NOW + 300,
    "iat": NOW,
    "nonce": "n1",
}


@pytest.mark.parametrize(
    ("change", "ok"),
    [
        ({}, True),
        ({"aud": ["portal", "other"], "azp": "portal"}, True),
        ({"aud": ["portal", "other"]}, False),  # several audiences need azp
        ({"azp": "other"}, False),
        ({"aud": "other"}, False),
        ({"iss": "https://evil"}, False),
        ({"nonce": "n2"}, False),
        ({"exp": NOW - 120}, False),
        ({"iat": NOW + 600}, False),
        ({"sub": ""}, False),
        ({"exp": None}, False),
    ],
)
def test_id_token_claims(change: dict[str, Any], ok: bool) -> None:
    claims = {**ID_CLAIMS, **change}
    claims = {k: v for k, v in claims.items() if v is not None}
    kw: dict[str, Any] = {"issuer": "https://idp", "client_id": "portal", "nonce": "n1"}
    if ok:
        check_id_token(claims, now=NOW, leeway=60, **kw)
    else:
        with pytest.raises(InvalidToken):
            check_id_token(claims, now=NOW, leeway=60, **kw)


def test_access_token_rules() -> None:
    claims = {"iss": "https://idp", "aud": "api", "exp": NOW + 60, "sub": "c"}
    kw: dict[str, Any] = {"issuer": "https://idp", "audiences": ["api"], "now": NOW, "leeway": 0}
    check_access_token({"typ": "at+jwt"}, claims, **kw)
    check_access_token({}, claims, **kw)
    with pytest.raises(InvalidToken):
        check_access_token({"typ": "id+jwt"}, claims, **kw)
    with pytest.raises(InvalidToken):  # an ID token presented as an access token
        check_access_token({}, {**claims, "nonce": "n"}, **kw)
    with pytest.raises(InvalidToken):
        check_access_token({}, {**claims, "aud": "other"}, **kw)
    with pytest.raises(InvalidToken) as ei:
        check_access_token({}, {**claims, "exp": NOW - 10}, **kw)
    assert ei.value.expired


def test_provider_keys_skip_private_and_symmetric_keys() -> None:
    import orjson

    k = RSAKey.generate_key(2048, private=True, parameters={"kid": "k1"})
    doc = {
        "keys": [
            k.as_dict(private=False),
            k.as_dict(private=True) | {"kid": "leaked"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {"kty": "RSA", "kid": "broken", "n": "x"},
            k.as_dict(private=False) | {"kid": "enc", "use": "enc"},
        ]
    }
    keys = ProviderKeys("http://idp/jwks").parse(orjson.dumps(doc))
    assert [key.kid for key in keys] == ["k1"]


def test_discovery_issuer_must_match_exactly() -> None:
    import orjson

    doc = {
        "issuer": "https://idp.example.com",
        "authorization_endpoint": "https://idp.example.com/auth",
        "token_endpoint": "https://idp.example.com/token",
        "jwks_uri": "https://idp.example.com/jwks",
    }
    meta = parse_metadata(orjson.dumps(doc), "https://idp.example.com")
    assert meta.algorithms == ("RS256",) and meta.end_session_endpoint is None
    with pytest.raises(ValueError, match="does not match"):
        parse_metadata(orjson.dumps(doc), "https://idp.example.com/")
    with pytest.raises(ValueError, match="plain URL"):
        bad = {**doc, "authorization_endpoint": "https://idp.example.com/a\r\nSet-Cookie: x=1"}
        parse_metadata(orjson.dumps(bad), "https://idp.example.com")
    with pytest.raises(ValueError, match="signing algorithm"):
        parse_metadata(
            orjson.dumps({**doc, "id_token_signing_alg_values_supported": ["HS256", "none"]}),
            "https://idp.example.com",
        )


def test_documented_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from portway.config.loader import load_config

    monkeypatch.setenv("OIDC_SECRET", "portal-secret")
    monkeypatch.setenv("SESSION_SECRET", "s" * 32)
    example = Path(__file__).resolve().parents[3] / "examples" / "oidc.yaml"
    cfg = load_config(str(example))
    oidc = next(p for p in cfg.plugins if p.name == "oidc")
    assert oidc.config["bearer"] is True


def test_documented_plugin_block_loads() -> None:
    """The oidc block of docs/authentication.md is a valid binding, as written."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "authentication.md").read_text()
    block = next(
        b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if b.startswith("- name: oidc")
    )
    text = (
        "upstreams: {u: {targets: [{url: 'http://127.0.0.1:1'}]}}\n"
        "routes: [{name: r, match: {paths: ['/']}, upstream: u}]\n"
        "plugins:\n" + "".join("  " + line + "\n" for line in block.splitlines())
    )
    cfg = load_config_text(text, "docs", env={"OIDC_SECRET": "s", "SESSION_SECRET": "k" * 32})
    assert cfg.plugins[0].name == "oidc"

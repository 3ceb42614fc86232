"""Pure helpers: DN canonicalisation, header rendering, token extraction, LRU, challenges."""

from __future__ import annotations

import pytest

from portway.http.headers import Headers
from portway.pipeline.context import Consumer
from portway.plugins._identity.cache import TtlLru
from portway.plugins._identity.dn import cert_sans, cert_subject, parse_dn
from portway.plugins._identity.errors import challenge
from portway.plugins._identity.headers import (
    header_value,
    lookup_claim,
    set_consumer_headers,
    strip_identity,
)
from portway.plugins._identity.jose import b64url_decode
from portway.plugins._identity.tokens import (
    AmbiguousCredentialsError,
    BearerSourceConfig,
    bearer_token,
    hide_bearer,
    remove_query_params,
)
from tests.identity_testing import make_context


def test_dn_canonical_form_ignores_order_and_name_spelling() -> None:
    a = parse_dn("CN=alice,O=Acme")
    b = parse_dn("o=Acme, commonName=alice")
    cert = {"subject": ((("organizationName", "Acme"),), (("commonName", "alice"),))}
    assert a == b == cert_subject(cert)
    assert parse_dn("CN=alice") != a


def test_dn_escapes() -> None:
    assert parse_dn(r"CN=Smith\, John,O=A\2bB") == (("CN", "Smith, John"), ("O", "A+B"))
    assert parse_dn("CN=a+UID=b") == (("CN", "a"), ("UID", "b"))
    with pytest.raises(ValueError):
        parse_dn("alice")


def test_cert_sans() -> None:
    cert = {"subjectAltName": (("DNS", "a.example"), ("email", "x@y"), ("othername", "?"))}
    assert cert_sans(cert) == ["a.example", "x@y"]
    assert cert_subject({}) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        (42, "42"),
        (True, "true"),
        (["a", "b"], "a,b"),
        ({"k": 1}, '{"k":1}'),
        ("evil\r\nx-injected: 1", "evil%0D%0Ax-injected: 1"),
        ("ünï", "%C3%BCn%C3%AF"),
        (None, None),
        ("", None),
        ("x" * 5000, None),
    ],
)
def test_header_value_is_always_safe(value: object, expected: str | None) -> None:
    assert header_value(value) == expected


def test_lookup_claim_dotted() -> None:
    claims = {"realm_access": {"roles": ["a"]}, "a.b": 1}
    assert lookup_claim(claims, "realm_access.roles") == ["a"]
    assert lookup_claim(claims, "a.b") == 1
    assert lookup_claim(claims, "nope.x") is None


def test_strip_and_set_consumer_headers() -> None:
    h = Headers.from_pairs([("X-Consumer-ID", "evil"), ("x-consumer-groups", "admin"), ("a", "1")])
    strip_identity(h, [b"x-user-id"])
    assert list(h) == [("a", "1")]
    set_consumer_headers(h, Consumer(id="1", username="u", groups=frozenset({"b", "a"})))
    assert h.get("x-consumer-groups") == "a,b"
    assert "x-anonymous-consumer" not in h


def test_challenge_quoting() -> None:
    assert challenge("Bearer", 'a"b\\', error="x\r\n") == 'Bearer realm="a\\"b\\\\", error="x"'


def test_bearer_sources_and_ambiguity() -> None:
    cfg = BearerSourceConfig(cookie="tok", query_param="access_token")
    assert (
        bearer_token(make_context(headers=[("authorization", "Bearer abc")]).request, cfg) == "abc"
    )
    assert bearer_token(make_context(headers=[("cookie", "x=1; tok=abc")]).request, cfg) == "abc"
    assert bearer_token(make_context(query=b"access_token=abc").request, cfg) == "abc"
    same = make_context(headers=[("authorization", "Bearer abc")], query=b"access_token=abc")
    assert bearer_token(same.request, cfg) == "abc"
    with pytest.raises(AmbiguousCredentialsError):
        bearer_token(
            make_context(
                headers=[("authorization", "Bearer a"), ("authorization", "bearer b")]
            ).request,
            cfg,
        )
    with pytest.raises(ValueError):
        bearer_token(make_context(headers=[("authorization", "Bearer a b")]).request, cfg)
    assert bearer_token(make_context(headers=[("authorization", "Basic abc")]).request, cfg) is None


def test_hide_bearer_everywhere() -> None:
    cfg = BearerSourceConfig(cookie="tok", query_param="t")
    ctx = make_context(
        headers=[("authorization", "Bearer abc"), ("cookie", "a=1; tok=abc; b=2")],
        query=b"t=abc&z=1",
    )
    hide_bearer(ctx.upstream_request, cfg)
    h = ctx.upstream_request.headers
    assert "authorization" not in h and h.get("cookie") == "a=1; b=2"
    assert ctx.upstream_request.query == b"z=1"


def test_remove_query_params() -> None:
    assert remove_query_params(b"a=1&key=2&key=3&b", {"key"}) == b"a=1&b"
    assert remove_query_params(b"k%65y=1&x=2", {"key"}) == b"x=2"


def test_b64url_strict() -> None:
    assert b64url_decode("YQ") == b"a"
    for bad in ("YQ==", "Y", "YR", "a+b/", "YQ\n"):
        with pytest.raises(ValueError):
            b64url_decode(bad)


def test_ttl_lru() -> None:
    now = [0.0]
    c: TtlLru[str, int] = TtlLru(2, clock=lambda: now[0])
    c.put("a", 1, 10)
    c.put("b", 2, 10)
    assert c.get("a") == 1
    c.put("c", 3, 10)  # evicts b, the least recently used
    assert c.get("b") is None and c.get("a") == 1
    now[0] = 11
    assert c.get("a") is None and len(c) == 1

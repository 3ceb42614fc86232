"""basic_auth: argon2id and bcrypt, cache, malformed input, timing-neutral unknown users."""

from __future__ import annotations

import asyncio
import base64
import time

import bcrypt
import pytest
from argon2 import PasswordHasher

from portway.plugins._identity import hashing
from portway.plugins.basic_auth import plugin as basic_module
from portway.plugins.basic_auth.config import BasicAuthConfig
from portway.plugins.basic_auth.plugin import BasicAuthPlugin
from tests.identity_testing import make_context, make_env
from tests.plugins._identity.kit import refused, www_authenticate

ARGON = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("alice-pw")
BCRYPT = bcrypt.hashpw(b"b\xc3\xb6b-pw", bcrypt.gensalt(rounds=4)).decode()
CONSUMERS = [
    {"username": "alice", "credentials": {"basic_auth": [{"password_hash": ARGON}]}},
    {"username": "bob", "credentials": {"basic_auth": [{"password_hash": BCRYPT}]}},
]


def basic(user: str, pw: str) -> tuple[str, str]:
    return ("authorization", "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode())


def plugin(**cfg: object) -> BasicAuthPlugin:
    return BasicAuthPlugin(BasicAuthConfig.model_validate(cfg), make_env(CONSUMERS))


@pytest.mark.parametrize(("user", "pw"), [("alice", "alice-pw"), ("bob", "böb-pw")])
async def test_valid_credentials(user: str, pw: str) -> None:
    ctx = make_context(headers=[basic(user, pw)])
    await plugin().on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.username == user
    assert "authorization" not in ctx.upstream_request.headers


@pytest.mark.parametrize(
    "header",
    [
        basic("alice", "wrong"),
        basic("nobody", "alice-pw"),
        basic("alice", "alice-pw" * 20),
        ("authorization", "Basic !!notbase64"),
        ("authorization", "Basic " + base64.b64encode(b"no-colon").decode()),
        ("authorization", "Basic " + base64.b64encode(b"\xff\xfe:x").decode()),
        ("authorization", "Basic " + base64.b64encode(b"alice:alice-pw\r\n").decode()),
        ("authorization", "Basic " + base64.b64encode(b":alice-pw").decode()),
    ],
)
async def test_refusals_are_uniform(header: tuple[str, str]) -> None:
    e = await refused(plugin(), make_context(headers=[header]))
    assert e.status == 401 and e.message == "invalid credentials"
    assert www_authenticate(e) == ['Basic realm="portway"']


async def test_missing_and_other_scheme() -> None:
    for headers in ([], [("authorization", "Bearer abc")]):
        e = await refused(plugin(), make_context(headers=headers))
        assert e.message == "missing credentials"


async def test_scheme_is_case_insensitive() -> None:
    user, value = basic("alice", "alice-pw")
    ctx = make_context(headers=[(user, value.replace("Basic", "bAsIc"))])
    await plugin().on_request(ctx)
    assert ctx.consumer is not None


async def test_success_cache_skips_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = hashing.verify_password

    def counting(h: str, pw: str) -> bool:
        nonlocal calls
        calls += 1
        return real(h, pw)

    monkeypatch.setattr(basic_module, "verify_password", counting)
    p = plugin()
    for _ in range(5):
        await p.on_request(make_context(headers=[basic("alice", "alice-pw")]))
    assert calls == 1
    # a wrong password for a cached user is still verified (and refused)
    await refused(p, make_context(headers=[basic("alice", "nope")]))
    assert calls == 2


async def test_cache_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = hashing.verify_password

    def counting(h: str, pw: str) -> bool:
        nonlocal calls
        calls += 1
        return real(h, pw)

    monkeypatch.setattr(basic_module, "verify_password", counting)
    p = plugin(cache_size=0)
    for _ in range(3):
        await p.on_request(make_context(headers=[basic("bob", "böb-pw")]))
    assert calls == 3


async def test_verification_does_not_block_the_loop() -> None:
    slow = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1).hash("pw")
    p = BasicAuthPlugin(
        BasicAuthConfig(),
        make_env([{"username": "s", "credentials": {"basic_auth": [{"password_hash": slow}]}}]),
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    t = asyncio.create_task(ticker())
    start = time.perf_counter()
    await p.on_request(make_context(headers=[basic("s", "pw")]))
    elapsed = time.perf_counter() - start
    t.cancel()
    # the loop kept ticking during the hash (at least a third of the possible ticks)
    assert ticks >= (elapsed / 0.005) / 3


@pytest.mark.parametrize(
    ("hashes", "expected"),
    [
        ([BCRYPT, BCRYPT, ARGON], "bcrypt$2b$04"),
        ([ARGON], "argon2id$v=19$m=8192,t=1,p=1"),
        ([bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=5, prefix=b"2a")).decode()], "bcrypt$2a$05"),
    ],
)
async def test_unknown_users_verify_a_dummy_of_the_configured_scheme_and_cost(
    monkeypatch: pytest.MonkeyPatch, hashes: list[str], expected: str
) -> None:
    """An unknown user costs what a real user costs: the dummy hash has the scheme and cost
    of the configured hashes (a bcrypt-cost-4 account next to an argon2 dummy answered in a
    fraction of the unknown-user time, telling which usernames exist)."""
    verified: list[str] = []
    real = hashing.verify_password

    def spying(h: str, pw: str) -> bool:
        verified.append(h)
        return real(h, pw)

    monkeypatch.setattr(basic_module, "verify_password", spying)
    consumers = [
        {"username": f"u{i}", "credentials": {"basic_auth": [{"password_hash": h}]}}
        for i, h in enumerate(hashes)
    ]
    p = BasicAuthPlugin(BasicAuthConfig.model_validate({}), make_env(consumers))
    assert p.dummy_params() == expected
    await refused(p, make_context(headers=[basic("nobody", "pw")]))
    assert len(verified) == 1
    dummy = verified[0]
    assert dummy not in hashes and hashing.hash_params(dummy) == expected
    if expected.startswith("bcrypt"):
        # the cost really is the configured one (bcrypt's cost is the work factor itself)
        assert dummy.split("$")[2] == expected.split("$")[2]
    # a known user with a wrong password verifies its own hash: same scheme and cost
    await refused(p, make_context(headers=[basic("u0", "wrong")]))
    assert hashing.hash_params(verified[1]) == hashing.hash_params(hashes[0])

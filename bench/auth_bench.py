"""Per-request cost of the authentication plugins' ``on_request`` (warm caches).

Each method runs on a prepared :class:`RequestContext` in a tight loop; methods are
interleaved round by round so machine noise hits them all alike, and the median per-call time
across rounds is reported in microseconds.

    PYTHONPATH=src python bench/auth_bench.py [--rounds 15] [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import time
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
from argon2 import PasswordHasher
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from portway.plugins._identity.testing import make_context, make_env

from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import Plugin
from portway.plugins.basic_auth.config import BasicAuthConfig
from portway.plugins.basic_auth.plugin import BasicAuthPlugin
from portway.plugins.jwt.config import JwtConfig
from portway.plugins.jwt.plugin import JwtPlugin
from portway.plugins.key_auth.config import KeyAuthConfig
from portway.plugins.key_auth.plugin import KeyAuthPlugin

SECRET = "b" * 64


def _pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def build() -> dict[str, tuple[Plugin[Any], RequestContext]]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    argon = PasswordHasher().hash("pw")
    env = make_env(
        [
            {
                "username": "alice",
                "groups": ["admin"],
                "credentials": {
                    "key_auth": [{"key": "alice-key"}],
                    "basic_auth": [{"password_hash": argon}],
                    "jwt": [{"issuer": "alice-app", "secret": SECRET}],
                },
            }
        ]
    )
    jwt_cfg = JwtConfig.model_validate(
        {
            "issuers": [
                {"issuer": "rsa-idp", "algorithms": ["RS256"], "public_key": _pem(rsa_key)},
                {"issuer": "ec-idp", "algorithms": ["ES256"], "public_key": _pem(ec_key)},
            ]
        }
    )
    jwt_plugin = JwtPlugin(jwt_cfg, env)
    exp = int(time.time()) + 3600
    hs = pyjwt.encode({"iss": "alice-app", "exp": exp, "scope": "a b"}, SECRET, "HS256")
    rs = pyjwt.encode({"iss": "rsa-idp", "sub": "u", "exp": exp}, rsa_key, "RS256")
    es = pyjwt.encode({"iss": "ec-idp", "sub": "u", "exp": exp}, ec_key, "ES256")
    basic = base64.b64encode(b"alice:pw").decode()

    def ctx(*headers: tuple[str, str]) -> RequestContext:
        return make_context("/api", headers=[("host", "x"), ("user-agent", "bench"), *headers])

    return {
        "key_auth": (
            KeyAuthPlugin(KeyAuthConfig(), env),
            ctx(("apikey", "alice-key")),
        ),
        "basic_auth (cached)": (
            BasicAuthPlugin(BasicAuthConfig(), env),
            ctx(("authorization", f"Basic {basic}")),
        ),
        "jwt HS256": (jwt_plugin, ctx(("authorization", f"Bearer {hs}"))),
        "jwt RS256": (jwt_plugin, ctx(("authorization", f"Bearer {rs}"))),
        "jwt ES256": (jwt_plugin, ctx(("authorization", f"Bearer {es}"))),
    }


async def _run(plugin: Plugin[Any], ctx: RequestContext, calls: int) -> float:
    on_request = plugin.on_request
    start = time.perf_counter()
    for _ in range(calls):
        await on_request(ctx)
    return (time.perf_counter() - start) / calls * 1e6


async def main(rounds: int, calls: int, out: Callable[[str], None] = print) -> None:
    cases = build()
    for plugin, ctx in cases.values():  # warm caches (basic_auth hashes once here)
        await plugin.on_request(ctx)
        assert ctx.consumer is not None
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (plugin, ctx) in cases.items():
            samples[name].append(await _run(plugin, ctx, calls))
    out(
        f"{'method':<22} {'median µs':>10} {'min µs':>8} {'max µs':>8}   ({rounds} x {calls} calls)"
    )
    for name, s in samples.items():
        out(f"{name:<22} {statistics.median(s):>10.1f} {min(s):>8.1f} {max(s):>8.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=2000)
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(a.rounds, a.calls))

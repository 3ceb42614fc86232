"""An idle worker loads only what its config uses (issue 26, "memory").

Each check runs in a fresh interpreter: it loads and build-checks a config as ``portway run``
does (``server/preflight.py``), starts a :class:`Worker` on it,
proxies one request through it to a real upstream (so the request path's own imports happen
too), runs the post-start housekeeping, and prints the names of the modules then loaded. A
minimal pass-through config must not have imported any of the optional packages below;
configs that use a feature must have imported exactly that feature's package (the control
that shows the probe sees imports at all).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: optional packages and Portway modules a worker needs only for a configured feature
HEAVY = (
    "opentelemetry",  # tracing
    "grpc",  # gRPC health checks, transcoding tests
    "google.protobuf",  # grpc_transcode
    "jsonschema",
    "jsonschema_rs",  # request_validation
    "cryptography",  # TLS certificates, JWT RS/ES keys, OIDC cookies
    "prometheus_client",  # the /metrics scrape, feature counters
    "h2",
    "hpack",  # HTTP/2 listeners and upstreams
    "argon2",
    "bcrypt",  # basic_auth password hashes
    "redis",  # the Redis state store
    "dns",  # DNS discovery
    "portway.http.h2",
    "portway.http.h2client",
    "portway.http.h2conn",
    "portway.admin",  # the admin API, the dashboard and its "recent errors" ring
    "portway.observability.tracing_otel",
    "portway.runtime.peers",  # several workers (s10-mem)
    "portway.config.aggregate",
    "portway.config.jsonpath",  # aggregate routes: checked and built only when configured
    "portway.plugins._tls",  # routes that require a client certificate
)

#: standard-library packages nothing in a minimal worker needs (s8-mem): importlib.metadata
#: (pydantic's plugin scan, the plugin registry's entry points; with email, csv: ~1 MB),
#: email (an API version's sunset date), difflib (did-you-mean in config errors); OpenSSL's
#: digests (_hashlib, with hashlib, hmac, secrets: ~0.5 MB; the core uses portway.digest)
STDLIB = ("importlib.metadata", "email", "difflib", "_hashlib", "hashlib", "hmac", "secrets")

_PROBE = textwrap.dedent(
    """
    import asyncio, json, sys, tempfile

    from portway.http.client import simple_request
    from portway.server.preflight import preflight
    from portway.server.worker import Worker, ports_of, settle_after_start

    HEAVY = {heavy!r}
    STDLIB = {stdlib!r}

    async def upstream(reader, writer):
        await reader.readuntil(b"\\r\\n\\r\\n")
        writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok")
        await writer.drain()
        writer.close()

    async def main():
        up = await asyncio.start_server(upstream, "127.0.0.1", 0)
        port = up.sockets[0].getsockname()[1]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(sys.stdin.read().replace("UPSTREAM_PORT", str(port)))
        # what `portway run` does before its workers start: load and build-check
        cfg = await asyncio.to_thread(preflight, f.name)
        w = Worker(cfg, admin=False)
        await w.start()
        settle_after_start()
        r = await simple_request("GET", f"http://127.0.0.1:{{ports_of(w.servers)[0]}}/x")
        loaded = sorted(
            h for h in HEAVY if any(m == h or m.startswith(h + ".") for m in sys.modules)
        )
        stdlib = sorted(
            h for h in STDLIB if any(m == h or m.startswith(h + ".") for m in sys.modules)
        )
        loader = sys.modules.get("pydantic.plugin._loader")
        print(json.dumps({{
            "status": r.status, "loaded": loaded, "stdlib": stdlib,
            "pydantic_plugins_skipped": loader is not None and not hasattr(loader, "_plugins"),
        }}))
        await w.shutdown()
        up.close()

    asyncio.run(main())
    """
)

MINIMAL = """\
listeners: [{name: public, address: "127.0.0.1:0"}]
admin: {enabled: false}
upstreams: {u: {targets: [{url: "http://127.0.0.1:UPSTREAM_PORT"}]}}
routes: [{name: r, match: {paths: ["/"]}, upstream: u}]
"""


def _probe(config: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY, stdlib=STDLIB)],
        input=config,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_minimal_worker_imports_no_optional_package() -> None:
    result = _probe(MINIMAL)
    assert result["status"] == 200
    assert result["loaded"] == []
    # nor the standard-library packages only a rare feature or an error message needs
    assert result["stdlib"] == []
    # pydantic never scanned the installed distributions for its plugins
    assert result["pydantic_plugins_skipped"] is True


def test_a_version_with_a_sunset_formats_its_date_without_email_at_start() -> None:
    # the control for the email import made lazy: a route whose version has a sunset date
    # builds its lifecycle fields at start, which is the one place email.utils is needed
    cfg = MINIMAL.replace(
        "upstream: u}]",
        "upstream: u, versions: {from: 'header:x-v', default: '1', map: {'1': {upstream: u, sunset: 2030-01-01}}}}]",
    )
    result = _probe(cfg)
    assert result["status"] == 200
    assert "email" in result["stdlib"]  # (email.utils brings hashlib and hmac with it)


def test_consumers_with_key_auth_keys_do_not_load_cryptography() -> None:
    cfg = MINIMAL + (
        "consumers: [{username: app, credentials: {key_auth: [{key: k-123456}]}}]\n"
        "plugins: [{name: key_auth, config: {headers: [apikey]}}]\n"
    )
    result = _probe(cfg)
    # the request has no key: 401, proxied nowhere; nothing a key needs is optional: not
    # cryptography (JWT keys), nor argon2/bcrypt (password hashes; s8-mem: imported when a
    # hash is first checked, no longer with the consumer directory's hashing module)
    assert result["status"] == 401
    assert result["loaded"] == []


def test_a_configured_feature_loads_its_package() -> None:
    # the control: tracing on (an exporter that is never reached within the test) loads
    # OpenTelemetry, protobuf (its OTLP exporter) and the tracer module; nothing else
    cfg = MINIMAL + 'tracing: {enabled: true, endpoint: "http://127.0.0.1:9/v1/traces"}\n'
    result = _probe(cfg)
    assert result["status"] == 200
    assert result["loaded"] == [
        "google.protobuf",
        "opentelemetry",
        "portway.observability.tracing_otel",
    ]


def test_a_basic_auth_consumer_loads_its_hash_library_on_the_first_check() -> None:
    # the control for argon2/bcrypt made lazy: a basic_auth consumer's worker starts and
    # answers a request without credentials without them; the first password check loads
    # the library of the hash's scheme
    import bcrypt

    pw_hash = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
    cfg = MINIMAL + (
        "consumers: [{username: app, credentials: {basic_auth: "
        f"[{{username: app, password_hash: '{pw_hash}'}}]}}}}]\n"
        "plugins: [{name: basic_auth}]\n"
    )
    result = _probe(cfg)
    assert result["status"] == 401
    assert result["loaded"] == []
    check = (
        "import sys\n"
        "from portway.plugins._identity.hashing import verify_password\n"
        "assert 'bcrypt' not in sys.modules\n"
        f"assert verify_password({pw_hash!r}, 'secret')\n"
        "assert 'bcrypt' in sys.modules and 'argon2' not in sys.modules\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr


def test_an_aggregate_route_loads_its_template_modules() -> None:
    # the control for the aggregate checks made lazy (s10-mem): a config with an aggregate
    # route loads the template and JSON-path modules while it is loaded and built
    cfg = MINIMAL.replace(
        "routes: [",
        "routes: [{name: page, match: {paths: ['/page/{id}']}, aggregate: {calls: "
        "[{name: a, upstream: u, path: '/a/{params.id}', fields: {allow: [x]}}]}}, ",
    )
    result = _probe(cfg)
    assert result["status"] == 200
    assert result["loaded"] == ["portway.config.aggregate", "portway.config.jsonpath"]

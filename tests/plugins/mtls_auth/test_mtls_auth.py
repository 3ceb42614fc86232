"""mtls_auth: a real TLS handshake with a client certificate, then the consumer mapping."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from portway.plugins.mtls_auth.config import MtlsAuthConfig
from portway.plugins.mtls_auth.plugin import MtlsAuthPlugin
from tests.identity_testing import make_context, make_env
from tests.plugins._identity.kit import make_cert, pem_cert, pem_private, refused, www_authenticate

CONSUMERS = [
    {
        "username": "alice",
        "groups": ["ops"],
        "credentials": {"mtls": [{"subject": "CN=alice,O=Acme"}]},
    },
    {"username": "robot", "credentials": {"mtls": [{"san": "robot.svc.example"}]}},
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = make_cert("Test CA", None, None, ca=True)
    server, server_key = make_cert(
        "localhost",
        ca_key,
        ca.subject,
        sans=[x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))],
    )
    alice, alice_key = make_cert("alice", ca_key, ca.subject, org="Acme")
    robot, robot_key = make_cert(
        "unmapped-cn", ca_key, ca.subject, sans=[x509.DNSName("Robot.svc.example")]
    )
    rogue_ca, rogue_key = make_cert("Rogue CA", None, None, ca=True)
    mallory, mallory_key = make_cert("alice", rogue_key, rogue_ca.subject, org="Acme")
    files: dict[str, Path] = {}
    for name, cert, key in [
        ("ca", ca, ca_key),
        ("server", server, server_key),
        ("alice", alice, alice_key),
        ("robot", robot, robot_key),
        ("mallory", mallory, mallory_key),
    ]:
        (d / f"{name}.pem").write_bytes(pem_cert(cert))
        (d / f"{name}.key").write_bytes(pem_private(key))
        files[name] = d / name
    return files


async def handshake(pki: dict[str, Path], client: str | None) -> dict[str, Any] | None:
    """Run a real TLS server requiring client certs; return what getpeercert() gave it."""
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(f"{pki['server']}.pem", f"{pki['server']}.key")
    sctx.load_verify_locations(f"{pki['ca']}.pem")
    sctx.verify_mode = ssl.CERT_OPTIONAL
    got: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        obj = writer.get_extra_info("ssl_object")
        if not got.done():
            got.set_result(obj.getpeercert() if obj is not None else None)
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=sctx)
    port = server.sockets[0].getsockname()[1]
    cctx = ssl.create_default_context(cafile=f"{pki['ca']}.pem")
    if client is not None:
        cctx.load_cert_chain(f"{pki[client]}.pem", f"{pki[client]}.key")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=cctx)
        # with TLS 1.3 the client finishes first; a server-side refusal shows up as an alert
        # on read, or as the server never accepting the connection
        read = asyncio.ensure_future(reader.read())
        done, _ = await asyncio.wait({got, read}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        writer.close()
        if got in done:
            read.cancel()
            return got.result()
        read.cancel()
        return None
    except (ssl.SSLError, ConnectionError):
        return None
    finally:
        server.close()


def plugin(**cfg: Any) -> MtlsAuthPlugin:
    return MtlsAuthPlugin(MtlsAuthConfig.model_validate(cfg), make_env(CONSUMERS))


async def test_subject_dn_maps_to_consumer(pki: dict[str, Path]) -> None:
    cert = await handshake(pki, "alice")
    assert cert is not None
    ctx = make_context(headers=[("x-consumer-username", "root")])
    ctx.extra["peercert"] = cert
    await plugin().on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.username == "alice"
    assert ctx.consumer.groups == {"ops"} and ctx.consumer.claims["subject"] == "CN=alice,O=Acme"
    assert ctx.upstream_request.headers.get_all("x-consumer-username") == ["alice"]


async def test_san_maps_case_insensitively(pki: dict[str, Path]) -> None:
    cert = await handshake(pki, "robot")
    assert cert is not None
    ctx = make_context()
    ctx.extra["peercert"] = cert
    await plugin().on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.username == "robot"
    e = await refused(plugin(match=["subject"]), ctx_with(cert))
    assert e.status == 401


def ctx_with(cert: dict[str, Any] | None) -> Any:
    ctx = make_context()
    if cert is not None:
        ctx.extra["peercert"] = cert
    return ctx


async def test_certificate_from_another_ca_never_reaches_the_plugin(pki: dict[str, Path]) -> None:
    # the listener's verification refuses it, so no peercert exists and the plugin says 401
    assert await handshake(pki, "mallory") is None
    e = await refused(plugin(), ctx_with(None))
    assert e.status == 401 and e.message == "missing credentials"
    assert www_authenticate(e) == ['Certificate realm="portway"']


async def test_no_client_certificate(pki: dict[str, Path]) -> None:
    cert = await handshake(pki, None)
    assert cert in (None, {})
    assert (await refused(plugin(), ctx_with(cert))).status == 401


async def test_unmapped_certificate(pki: dict[str, Path]) -> None:
    other = {"subject": ((("commonName", "stranger"),),)}
    e = await refused(plugin(), ctx_with(other))
    assert e.status == 401 and e.message == "invalid credentials"
    ctx = ctx_with(other)
    await plugin(allow_unmapped=True).on_request(ctx)
    assert ctx.consumer is not None and ctx.consumer.username == "stranger"


async def test_garbage_peercert_does_not_crash() -> None:
    for cert in ({"subject": "nonsense"}, {"subject": [[1]]}, {"subjectAltName": 5}, "str"):
        e = await refused(plugin(), ctx_with(cert))  # type: ignore[arg-type]
        assert e.status == 401

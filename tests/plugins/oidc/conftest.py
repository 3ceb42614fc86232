"""Fixtures of the oidc tests: a real OpenID provider (oidc-provider on Node.js), a gateway
port registered with it, and a small cookie-keeping HTTP client that drives the provider's
login and consent pages like a browser.

The provider is started once per module (``npm ci`` first when ``idp/node_modules`` is
missing) with the test client ``portal`` whose redirect URI is
``http://127.0.0.1:<gateway port>/oauth2/callback``; every test of the module runs its own
gateway on that port.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import pytest
from joserfc.jwk import RSAKey

from portway.http.client import simple_request
from portway.http.headers import Headers
from portway.server.worker import Worker
from tests.helpers import _config, free_port

IDP_DIR = Path(__file__).parent / "idp"
CLIENT_SECRET = "portal-secret"
SESSION_SECRET = "0123456789abcdef0123456789abcdef-test"
RESOURCE = "urn:portway:api"


@dataclass
class Idp:
    issuer: str
    port: int
    gateway_port: int
    proc: subprocess.Popen[bytes]
    #: private key (PEM) of the ``portal-pkjwt`` client (client_auth: private_key_jwt)
    client_key_pem: bytes = b""

    def client_key_file(self, tmp: Path) -> str:
        path = tmp / "client-key.pem"
        path.write_bytes(self.client_key_pem)
        return str(path)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"


def _npm_ci() -> None:
    if (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is required for the oidc tests (apt-get install nodejs npm)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=IDP_DIR, check=True, timeout=300)


def start_idp(gateway_port: int, access_ttl: int = 300) -> Idp:
    _npm_ci()
    port = free_port()
    client_key = RSAKey.generate_key(2048, private=True, parameters={"kid": "gw-1"})
    gw = f"http://127.0.0.1:{gateway_port}"
    env = dict(
        os.environ,
        IDP_PORT=str(port),
        IDP_REDIRECT_URIS=f"{gw}/oauth2/callback",
        IDP_POST_LOGOUT_URIS=f"{gw}/ {gw}/bye",
        IDP_ACCESS_TTL=str(access_ttl),
        IDP_CLIENT_SECRET=CLIENT_SECRET,
        IDP_RESOURCE=RESOURCE,
        IDP_PKJWT_JWKS=json.dumps({"keys": [client_key.as_dict(private=False)]}),
        NODE_ENV="development",
    )
    err = tempfile.TemporaryFile()  # noqa: SIM115 (the provider writes to it while it runs)
    proc = subprocess.Popen(
        ["node", "server.mjs"], cwd=IDP_DIR, env=env, stdout=subprocess.PIPE, stderr=err
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(b"READY "):
                issuer = line.split()[1].decode()
                return Idp(issuer, port, gateway_port, proc, client_key.as_pem(private=True))
        if proc.poll() is not None:
            break
    proc.kill()
    err.seek(0)
    # e.g. a Node.js older than oidc-provider needs (^20.19, ^22.12 or >= 24)
    raise RuntimeError(
        f"oidc-provider did not start: {err.read()[-2000:].decode(errors='replace')}"
    )


def stop_idp(idp: Idp) -> None:
    idp.proc.terminate()
    try:
        idp.proc.wait(10)
    except subprocess.TimeoutExpired:
        idp.proc.kill()
        idp.proc.wait()


@pytest.fixture(scope="module")
def idp() -> Iterator[Idp]:
    server = start_idp(free_port())
    try:
        yield server
    finally:
        stop_idp(server)


def oidc_config(idp: Idp, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "issuer": idp.issuer,
        "client_id": "portal",
        "client_secret": CLIENT_SECRET,
        "redirect_path": "/oauth2/callback",
        "scopes": ["openid", "profile", "email"],
        "session": {
            "store": "cookie",
            "secret": SESSION_SECRET,
            "cookie": {"name": "pw_session", "same_site": "lax", "secure": True},
        },
        "bearer": True,
        "bearer_audiences": [RESOURCE],
        "unauthenticated": "redirect",
        "logout": {"path": "/logout", "redirect_after": "/", "end_session": True},
        "forward": {
            "access_token_header": "authorization",
            "id_token_header": "x-id-token",
            "claims_headers": {"x-user-email": "email"},
        },
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def gateway_config(upstream_url: str, plugins: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "upstreams": {"app": {"targets": [{"url": upstream_url}]}},
        "routes": [{"name": "app", "match": {"paths": ["/"]}, "upstream": "app"}],
        "plugins": plugins,
    }


@dataclass
class GatewayOnPort:
    worker: Worker

    def plugin(self, name: str = "oidc") -> Any:
        gw = self.worker.gateway
        assert gw is not None
        return next(p for p in gw.graph.plugins if p.name == name)


@asynccontextmanager
async def run_gateway_on(port: int, config: dict[str, Any]) -> AsyncIterator[GatewayOnPort]:
    """An in-process gateway on ``port`` (the one registered with the provider)."""
    w = Worker(_config(config, port))
    await w.start()
    try:
        yield GatewayOnPort(w)
    finally:
        await w.shutdown()


# -- a cookie-keeping client --------------------------------------------------------------


@dataclass
class Cookie:
    value: str
    path: str
    attrs: dict[str, str]


@dataclass
class Reply:
    url: str
    status: int
    headers: Headers
    body: bytes

    @property
    def location(self) -> str:
        loc = self.headers.get("location")
        assert loc is not None, f"no Location in {self.status} from {self.url}"
        return urljoin(self.url, loc)

    def json(self) -> Any:
        import orjson

        return orjson.loads(self.body)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")


@dataclass
class Browser:
    """Keeps cookies per host:port (Path-scoped, Max-Age=0 deletes) and follows redirects."""

    jar: dict[str, dict[str, Cookie]] = field(default_factory=dict)
    accept: str = "text/html,application/xhtml+xml"
    history: list[Reply] = field(default_factory=list)

    def cookies(self, url: str) -> dict[str, Cookie]:
        return self.jar.setdefault(urlsplit(url).netloc, {})

    def _header(self, url: str) -> str | None:
        path = urlsplit(url).path or "/"
        pairs = [
            f"{k}={c.value}"
            for k, c in self.cookies(url).items()
            if path == c.path or path.startswith(c.path.rstrip("/") + "/") or c.path == "/"
        ]
        return "; ".join(pairs) if pairs else None

    def _store(self, url: str, headers: Headers) -> None:
        jar = self.cookies(url)
        for raw in headers.get_all("set-cookie"):
            first, *rest = raw.split(";")
            name, _, value = first.strip().partition("=")
            attrs: dict[str, str] = {}
            for a in rest:
                k, _, v = a.strip().partition("=")
                attrs[k.lower()] = v
            if attrs.get("max-age") == "0" or ("expires" in attrs and "1970" in attrs["expires"]):
                jar.pop(name, None)
            else:
                jar[name] = Cookie(value, attrs.get("path", "/") or "/", attrs)

    async def request(
        self,
        method: str,
        url: str,
        *,
        form: dict[str, str] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> Reply:
        h = [("accept", self.accept), *(headers or [])]
        cookie = self._header(url)
        if cookie:
            h.append(("cookie", cookie))
        body = b""
        if form is not None:
            body = urlencode(form).encode()
            h.append(("content-type", "application/x-www-form-urlencoded"))
        r = await simple_request(method, url, headers=h, body=body, timeout=10)
        self._store(url, r.headers)
        reply = Reply(url, r.status, r.headers, r.body)
        self.history.append(reply)
        return reply

    async def get(self, url: str, **kw: Any) -> Reply:
        return await self.request("GET", url, **kw)

    async def follow(self, reply: Reply, *, until: str | None = None, limit: int = 20) -> Reply:
        """Follow redirects from ``reply`` (stopping before a URL starting with ``until``)."""
        for _ in range(limit):
            if reply.status not in (301, 302, 303, 307):
                return reply
            nxt = reply.location
            if until is not None and nxt.startswith(until):
                return reply
            reply = await self.get(nxt)
        raise AssertionError("redirect loop: " + " -> ".join(r.url for r in self.history[-5:]))

    async def provider_login(self, reply: Reply, user: str = "alice") -> Reply:
        """From the gateway's redirect to the provider: follow the provider's redirects, sign
        in and consent on its pages, and return the redirect back to the gateway (not
        followed)."""
        provider = urlsplit(reply.location).netloc
        for _ in range(30):
            if reply.status in (302, 303, 307):
                if urlsplit(reply.location).netloc != provider:
                    return reply
                reply = await self.get(reply.location)
                continue
            assert reply.status == 200, (reply.status, reply.body[:300])
            parser = _Forms()
            parser.feed(reply.body.decode())
            form = next(f for f in parser.forms if "prompt" in f["fields"])
            fields = dict(form["fields"])
            if fields["prompt"] == "login":
                fields.update(login=user, password="any")
            reply = await self.request("POST", urljoin(reply.url, form["action"]), form=fields)
        raise AssertionError("provider login did not finish")


_STATE = re.compile(r"[?&]state=([^&]+)")


def state_of(url: str) -> str:
    m = _STATE.search(url)
    assert m is not None
    return m.group(1)

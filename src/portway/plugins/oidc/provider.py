"""The OpenID provider as the gateway sees it: discovery, signing keys and the token endpoint.

Discovery (``/.well-known/openid-configuration``) is fetched at start and refreshed on a
schedule; a failed refresh keeps the last good document, and while none was ever fetched
requests trigger at most one fetch per :data:`RETRY_EVERY` seconds (shared by concurrent
requests). Signing keys are a :class:`~portway.plugins.jwt.jwks.RotatingKeys` of ``joserfc``
keys: refreshed on a schedule and on an unknown ``kid``, the last good set kept on failure.

Failures are classified for the client: :class:`ProviderUnavailable` (unreachable, timed out:
503) and :class:`ProviderBadResponse` (an answer that is not what the protocol promises: 502);
:class:`GrantRejected` is the token endpoint refusing a code or refresh token (RFC 6749 §5.2).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

import orjson
from joserfc import jwk, jwt
from joserfc.errors import JoseError

from portway.plugins._identity.fetch import http_request
from portway.plugins.jwt.jwks import Fetch, RotatingKeys
from portway.plugins.oidc.config import SIGNING_ALGS, OidcConfig
from portway.tasks import stop_tasks

log = logging.getLogger("portway.plugins.oidc")

RETRY_EVERY = 5.0
MAX_KEYS = 100


class ProviderError(Exception):
    """The provider could not give a usable answer; ``status`` is what the client gets."""

    status = 503


class ProviderUnavailable(ProviderError):
    status = 503


class ProviderBadResponse(ProviderError):
    status = 502


class GrantRejected(Exception):
    """The token endpoint refused the grant (``error`` is its RFC 6749 error code)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass(frozen=True, slots=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    algorithms: tuple[str, ...]


def parse_metadata(body: bytes, issuer: str) -> Metadata:
    """A discovery document's fields the plugin needs; ``ValueError`` when it is not usable."""
    doc: Any = orjson.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("issuer") != issuer:
        # OpenID Connect Discovery §4.3: the issuer must be exactly the one asked for
        raise ValueError(f"issuer {doc.get('issuer')!r} does not match {issuer!r}")

    def url(name: str, required: bool = True) -> str | None:
        v = doc.get(name)
        if v is None and not required:
            return None
        if not isinstance(v, str) or not v.startswith(("https://", "http://")):
            raise ValueError(f"{name} missing or not an http(s) URL")
        if not (v.isascii() and v.isprintable()) or " " in v:
            # these end up in Location fields: nothing that could split or bend a header
            raise ValueError(f"{name} is not a plain URL")
        return v

    algs = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
    if not isinstance(algs, list):
        raise ValueError("id_token_signing_alg_values_supported is not a list")
    usable = tuple(a for a in algs if a in SIGNING_ALGS)
    if not usable:
        raise ValueError(f"no supported ID token signing algorithm among {algs!r}")
    auth, token, jwks = url("authorization_endpoint"), url("token_endpoint"), url("jwks_uri")
    assert auth is not None and token is not None and jwks is not None
    return Metadata(issuer, auth, token, jwks, url("end_session_endpoint", False), usable)


def load_signing_key(path: str, alg: str) -> jwk.Key:
    """The private key of ``client_auth: private_key_jwt``; ``ValueError`` when unusable."""
    cls: type[jwk.RSAKey | jwk.ECKey | jwk.OKPKey] = (
        jwk.RSAKey if alg[0] in "RP" else jwk.ECKey if alg.startswith("ES") else jwk.OKPKey
    )
    try:
        with open(path, "rb") as f:
            key = cls.import_key(f.read())
    except OSError as e:
        raise ValueError(f"private_key_file {path!r} cannot be read: {e.strerror}") from None
    except (JoseError, ValueError, TypeError) as e:
        raise ValueError(f"private_key_file {path!r} is not a {alg} private key: {e}") from None
    if not key.is_private:
        raise ValueError(f"private_key_file {path!r} holds a public key")
    return key


class ProviderKeys(RotatingKeys[jwk.Key]):
    """The provider's public signature keys (``joserfc`` keys)."""

    def parse(self, body: bytes) -> list[jwk.Key]:
        doc: Any = orjson.loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError("not a JWKS document")
        keys: list[jwk.Key] = []
        for item in doc["keys"][:MAX_KEYS]:
            if not isinstance(item, dict) or item.get("use") not in (None, "sig"):
                continue
            if item.get("kty") not in ("RSA", "EC", "OKP"):
                continue  # symmetric keys never verify a provider's tokens
            if any(k in item for k in ("d", "p", "q", "dp", "dq", "qi")):
                continue  # private key material published by mistake: refuse to use it
            try:
                keys.append(jwk.import_key(item, item["kty"]))
            except (JoseError, ValueError, TypeError) as e:
                log.debug("skipping JWK %r: %s", item.get("kid"), e)
        return keys


class Provider:
    """One OpenID provider: metadata, keys and the token endpoint (see the module docstring)."""

    def __init__(
        self,
        config: OidcConfig,
        *,
        fetch: Fetch = http_request,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._fetch = fetch
        self._clock = clock
        self.issuer = config.issuer
        base = config.issuer.rstrip("/")
        self.discovery_url = base + "/.well-known/openid-configuration"
        self._meta: Metadata | None = None
        self._keys: ProviderKeys | None = None
        self._inflight: asyncio.Task[Metadata | None] | None = None
        self._last_attempt: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._signing_key: jwk.Key | None = None
        if config.client_auth == "private_key_jwt":
            assert config.private_key_file is not None
            self._signing_key = load_signing_key(config.private_key_file, config.private_key_alg)
        #: discovery fetches attempted; for tests
        self.discovery_fetches = 0

    @property
    def keys(self) -> ProviderKeys | None:
        return self._keys

    async def start(self) -> None:
        await self._refresh_metadata()
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"oidc:{self.issuer}")

    async def aclose(self) -> None:
        await stop_tasks(self._task, self._inflight)
        self._task = None
        if self._keys is not None:
            await self._keys.aclose()

    async def _loop(self) -> None:
        while True:
            every = self.config.discovery_refresh
            await asyncio.sleep(every if self._meta is not None else min(every, RETRY_EVERY))
            await self._refresh_metadata()

    async def metadata(self) -> Metadata:
        """The current metadata; fetched now (rate-limited) if none was ever fetched."""
        if self._meta is not None:
            return self._meta
        last = self._last_attempt
        if self._inflight is not None or last is None or self._clock() - last >= RETRY_EVERY:
            await self._refresh_metadata()
        if self._meta is None:
            raise ProviderUnavailable("provider discovery failed")
        return self._meta

    async def _refresh_metadata(self) -> Metadata | None:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch_metadata())
        task = self._inflight
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._inflight is task:
                self._inflight = None

    async def _fetch_metadata(self) -> Metadata | None:
        self._last_attempt = self._clock()
        self.discovery_fetches += 1
        try:
            r = await self._fetch(
                "GET",
                self.discovery_url,
                headers=[("accept", "application/json")],
                timeout=self.config.timeout,
            )
            if r.status != 200:
                raise ValueError(f"HTTP {r.status}")
            meta = parse_metadata(r.body, self.issuer)
        except Exception as e:  # any failure keeps the last good document
            log.warning("OIDC discovery from %s failed: %s", self.discovery_url, e)
            return None
        if self._keys is None or self._keys.url != meta.jwks_uri:
            old = self._keys
            self._keys = ProviderKeys(
                meta.jwks_uri,
                refresh=self.config.jwks_refresh,
                min_refresh=self.config.jwks_min_refresh,
                timeout=self.config.timeout,
                fetch=self._fetch,
            )
            await self._keys.start()
            if old is not None:
                await old.aclose()
        self._meta = meta
        return meta

    async def keys_for(self, kid: str | None) -> list[jwk.Key]:
        await self.metadata()
        assert self._keys is not None
        return await self._keys.keys_for(kid)

    # -- token endpoint ---------------------------------------------------------------------

    def _client_auth(self, form: dict[str, str], token_endpoint: str) -> list[tuple[str, str]]:
        cfg = self.config
        if cfg.client_auth == "client_secret_basic":
            assert cfg.client_secret is not None
            # RFC 6749 §2.3.1: each part form-urlencoded before Basic
            pair = f"{quote_plus(cfg.client_id)}:{quote_plus(cfg.client_secret)}"
            return [("authorization", "Basic " + base64.b64encode(pair.encode()).decode())]
        form["client_id"] = cfg.client_id
        if cfg.client_auth == "client_secret_post":
            assert cfg.client_secret is not None
            form["client_secret"] = cfg.client_secret
            return []
        assert self._signing_key is not None
        now = int(time.time())
        claims = {
            "iss": cfg.client_id,
            "sub": cfg.client_id,
            "aud": token_endpoint,
            "jti": base64.urlsafe_b64encode(os.urandom(18)).decode(),
            "iat": now,
            "exp": now + 60,
        }
        form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        form["client_assertion"] = jwt.encode(
            {"alg": cfg.private_key_alg},
            claims,
            self._signing_key,
            algorithms=[cfg.private_key_alg],
        )
        return []

    async def token_request(self, form: dict[str, str]) -> dict[str, Any]:
        """POST ``form`` to the token endpoint; the JSON answer of a 200."""
        meta = await self.metadata()
        form = dict(form)
        headers = self._client_auth(form, meta.token_endpoint)
        headers += [
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ]
        try:
            r = await self._fetch(
                "POST",
                meta.token_endpoint,
                headers=headers,
                body=urlencode(form).encode("ascii"),
                timeout=self.config.timeout,
            )
        except Exception as e:
            log.warning("token endpoint %s unreachable: %r", meta.token_endpoint, e)
            raise ProviderUnavailable("token endpoint unreachable") from e
        try:
            data: Any = orjson.loads(r.body)
        except orjson.JSONDecodeError:
            data = None
        if r.status in (400, 401) and isinstance(data, dict) and isinstance(data.get("error"), str):
            raise GrantRejected(data["error"])
        if r.status != 200 or not isinstance(data, dict):
            log.warning("token endpoint %s answered %d", meta.token_endpoint, r.status)
            raise ProviderBadResponse(f"token endpoint answered {r.status}")
        if not isinstance(data.get("access_token"), str):
            raise ProviderBadResponse("token response without access_token")
        tt = data.get("token_type")
        if not isinstance(tt, str) or tt.lower() != "bearer":
            raise ProviderBadResponse(f"unsupported token_type {tt!r}")
        return data

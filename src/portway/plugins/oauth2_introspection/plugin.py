"""The ``oauth2_introspection`` plugin."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import orjson

from portway.errors import UnavailableError
from portway.pipeline.context import Consumer, RequestContext
from portway.pipeline.plugin import PluginConfig, PluginEnv
from portway.plugins._identity.base import IdentityPlugin
from portway.plugins._identity.cache import TtlLru
from portway.plugins._identity.errors import INVALID_TOKEN, challenge, missing, unauthorized
from portway.plugins._identity.fetch import FetchResponse, http_request
from portway.plugins._identity.hashing import credential_id, keyed_digest
from portway.plugins._identity.tokens import bearer_token, hide_bearer
from portway.plugins.jwt.jwks import Fetch
from portway.plugins.jwt.token import scopes_of
from portway.plugins.oauth2_introspection.config import IntrospectionConfig

log = logging.getLogger("portway.plugins.oauth2_introspection")

#: a cached verdict: the consumer for an active token, ``None`` for an inactive one
_Verdict = Consumer | None


class IntrospectionUnavailable(Exception):
    """The introspection endpoint could not give an answer."""


class IntrospectionPlugin(IdentityPlugin[IntrospectionConfig]):
    """Authenticates opaque bearer tokens with RFC 7662 introspection.

    Results are cached by a keyed hash of the token (never the token itself): active ones
    until ``min(exp, now + cache_ttl)``, inactive ones for ``negative_cache_ttl``. Concurrent
    requests with the same uncached token share one introspection call. When the endpoint
    fails or times out the request gets a 503 (or a 401 with ``on_error: unauthorized``).
    The response's ``scope`` becomes ``consumer.scopes`` and the whole response
    (``client_id``, ``sub``, …) ``consumer.claims``.
    """

    name = "oauth2_introspection"
    scheme = "Bearer"
    Config: ClassVar[type[PluginConfig]] = IntrospectionConfig

    def __init__(
        self,
        config: IntrospectionConfig,
        env: PluginEnv,
        *,
        fetch: Fetch = http_request,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, env)
        self._fetch = fetch
        self._clock = clock
        # values are 1-tuples so a cached negative verdict (None) differs from a miss
        self._cache: TtlLru[bytes, tuple[_Verdict]] = TtlLru(config.cache_size)
        self._inflight: dict[bytes, asyncio.Future[_Verdict]] = {}
        self._invalid = [challenge("Bearer", config.realm, error="invalid_token")]
        basic = f"{quote(config.client_id, safe='')}:{quote(config.client_secret, safe='')}"
        self._auth_header = "Basic " + base64.b64encode(basic.encode()).decode("ascii")
        self._by_id = {c.id: c for c in env.consumers.all()}
        #: introspection calls made; for metrics and tests
        self.calls = 0

    async def authenticate(self, ctx: RequestContext) -> Consumer:
        try:
            token = bearer_token(ctx.request, self.config)
        except ValueError:
            raise unauthorized(self._invalid, self.name, INVALID_TOKEN) from None
        if token is None:
            raise missing(self._challenges, self.name)
        if len(token) > self.config.max_token_bytes:
            raise unauthorized(self._invalid, self.name, INVALID_TOKEN)
        key = keyed_digest("introspection", token)
        try:
            verdict = await self._lookup(key, token)
        except IntrospectionUnavailable:
            if self.config.on_error == "unauthorized":
                raise unauthorized(self._invalid, self.name, INVALID_TOKEN) from None
            raise UnavailableError("authorization server unavailable", source=self.name) from None
        if verdict is None:
            raise unauthorized(self._invalid, self.name, INVALID_TOKEN)
        return verdict

    async def _lookup(self, key: bytes, token: str) -> _Verdict:
        hit = self._cache.get(key)
        if hit is not None:
            return hit[0]
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        fut: asyncio.Future[_Verdict] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            verdict, ttl = await self._introspect(token)
            self._cache.put(key, (verdict,), ttl)
            fut.set_result(verdict)
            return verdict
        except BaseException as e:
            fut.set_exception(e if isinstance(e, Exception) else IntrospectionUnavailable())
            # mark retrieved so an unawaited failure is not logged as "never retrieved"
            fut.exception()
            raise
        finally:
            del self._inflight[key]

    async def _introspect(self, token: str) -> tuple[_Verdict, float]:
        cfg = self.config
        form: dict[str, str] = {"token": token}
        if cfg.token_type_hint:
            form["token_type_hint"] = cfg.token_type_hint
        self.calls += 1
        try:
            r: FetchResponse = await self._fetch(
                "POST",
                cfg.endpoint,
                headers=[
                    ("authorization", self._auth_header),
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("accept", "application/json"),
                ],
                body=urlencode(form).encode("ascii"),
                timeout=cfg.timeout,
            )
        except Exception as e:
            log.warning("introspection call to %s failed: %r", cfg.endpoint, e)
            raise IntrospectionUnavailable() from e
        if r.status != 200:
            log.warning("introspection endpoint %s answered %d", cfg.endpoint, r.status)
            raise IntrospectionUnavailable()
        try:
            data: Any = orjson.loads(r.body)
        except orjson.JSONDecodeError as e:
            raise IntrospectionUnavailable() from e
        if not isinstance(data, dict):
            raise IntrospectionUnavailable()
        return self._verdict(data)

    def _verdict(self, data: dict[str, Any]) -> tuple[_Verdict, float]:
        cfg = self.config
        negative = (None, cfg.negative_cache_ttl)
        # RFC 7662 §2.2: only a boolean true means active
        if data.get("active") is not True:
            return negative
        now = self._clock()
        ttl = cfg.cache_ttl
        exp = data.get("exp")
        if exp is not None:
            if isinstance(exp, bool) or not isinstance(exp, int | float):
                return negative
            if exp <= now:
                return negative
            ttl = min(ttl, exp - now)
        nbf = data.get("nbf")
        if isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf > now:
            return negative
        owner: Consumer | None = None
        if cfg.consumer_claim is not None:
            ref = data.get(cfg.consumer_claim)
            if isinstance(ref, str):
                owner = self.env.consumers.get(ref) or self._by_id.get(ref)
            if owner is None:
                return negative
        scopes = scopes_of(data)
        subject = next(
            (
                v
                for v in (data.get("sub"), data.get("username"), data.get("client_id"))
                if isinstance(v, str) and v
            ),
            "",
        )
        cred = credential_id(self.name, f"{cfg.endpoint}|{subject}")
        if owner is not None:
            c = Consumer(
                id=owner.id,
                username=owner.username,
                groups=owner.groups,
                credential=cred,
                claims=data,
                scopes=scopes,
            )
        else:
            c = Consumer(id=subject, username=subject, credential=cred, claims=data, scopes=scopes)
        return c, ttl

    def hide(self, ctx: RequestContext) -> None:
        hide_bearer(ctx.upstream_request, self.config)

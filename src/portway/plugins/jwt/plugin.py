"""The ``jwt`` plugin."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from portway.http.models import Request
from portway.pipeline.context import Consumer, RequestContext
from portway.pipeline.plugin import PluginConfig, PluginEnv
from portway.plugins._identity.base import IdentityPlugin
from portway.plugins._identity.credentials import JwtEntry
from portway.plugins._identity.errors import challenge, missing, unauthorized
from portway.plugins._identity.hashing import credential_id
from portway.plugins._identity.headers import consumer_pairs, lookup_claim
from portway.plugins._identity.jose import JwsKey
from portway.plugins._identity.tokens import bearer_token, hide_bearer
from portway.plugins.jwt.cache import TokenCache
from portway.plugins.jwt.config import IssuerConfig, JwtConfig
from portway.plugins.jwt.hooks import JwtHooks
from portway.plugins.jwt.jwks import Fetch, JwksCache
from portway.plugins.jwt.token import ParsedToken, TokenError, check_claims, parse, scopes_of


@dataclass(slots=True)
class _Issuer:
    config: IssuerConfig
    keys: list[JwsKey]
    jwks: JwksCache | None
    audiences: list[str]
    credential: str


class JwtPlugin(IdentityPlugin[JwtConfig]):
    """Authenticates bearer JWTs.

    A token is accepted only if (1) its header passes the structural rules of
    :func:`~portway.plugins.jwt.token.parse` (no ``none``, no ``jku``/``x5u``/``jwk``/``x5c``,
    no ``crit``, size cap), (2) its ``iss`` names a configured issuer or a consumer's jwt
    credential, (3) one of that issuer's keys bound to the header's exact ``alg`` verifies
    the signature, and (4) its claims pass :func:`~portway.plugins.jwt.token.check_claims`.
    Every refusal is a 401 ``invalid_token`` (or ``token expired``) without further detail.
    """

    name = "jwt"
    scheme = "Bearer"
    Config: ClassVar[type[PluginConfig]] = JwtConfig

    def __init__(
        self,
        config: JwtConfig,
        env: PluginEnv,
        *,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, env)
        self._clock = clock
        self._allowed = frozenset(config.algorithms)
        self._invalid = [challenge("Bearer", config.realm, error="invalid_token")]
        self._expired = [
            challenge(
                "Bearer", config.realm, error="invalid_token", error_description="token expired"
            )
        ]
        self._malformed = [challenge("Bearer", config.realm, error="invalid_request")]
        self._issuers: dict[str, _Issuer] = {}
        for ic in config.issuers:
            jwks = None
            if ic.jwks_url is not None:
                extra: dict[str, Any] = {"fetch": fetch} if fetch is not None else {}
                jwks = JwksCache(
                    ic.jwks_url,
                    allowed=self._allowed & frozenset(ic.algorithms),
                    refresh=config.jwks_refresh,
                    min_refresh=config.jwks_min_refresh,
                    timeout=config.jwks_timeout,
                    **extra,
                )
            self._issuers[ic.issuer] = _Issuer(
                ic,
                ic.static_keys(),
                jwks,
                ic.audiences if ic.audiences is not None else config.audiences,
                credential_id("jwt", ic.issuer),
            )
        self._by_id = {c.id: c for c in env.consumers.all()}
        #: verified tokens (jwt/cache.py): a token seen again skips parsing and the signature
        self._cache = TokenCache(config.leeway, config.max_age)
        # static keys and consumers' keys verify without awaiting; a JWKS may have to be
        # fetched (an unknown kid), and then the hook suspends and the request is handed to
        # the connection's task (pipeline/suspend.py): every request may start task-free
        self.sync_hooks = True
        #: a kept token's request as compiled plain calls (pipeline/runner.py); only for the
        #: default token source and without an anonymous fallback, and not in subclasses
        self.fast_hooks: JwtHooks | None = None
        if (
            type(self) is JwtPlugin
            and self._anonymous is None
            and (config.header or "").lower() == "authorization"
            and config.cookie is None
            and config.query_param is None
        ):
            self.fast_hooks = JwtHooks(
                self._cache,
                self.on_request,
                self._hide_in if config.hide_credentials else None,
                clock,
            )

    async def start(self) -> None:
        for i in self._issuers.values():
            if i.jwks is not None:
                await i.jwks.start()

    async def aclose(self) -> None:
        for i in self._issuers.values():
            if i.jwks is not None:
                await i.jwks.aclose()

    def jwks(self, issuer: str) -> JwksCache | None:
        i = self._issuers.get(issuer)
        return i.jwks if i is not None else None

    async def authenticate(self, ctx: RequestContext) -> Consumer:
        try:
            token = bearer_token(ctx.request, self.config)
        except ValueError:
            raise unauthorized(self._malformed, self.name, "invalid token") from None
        if token is None:
            raise missing(self._challenges, self.name)
        hit = self._cache.get(token, self._clock())
        if hit is not None:
            return hit
        try:
            return await self._verify(token)
        except TokenError as e:
            ctx.extra["auth_failure"] = e.detail
            headers = self._expired if e.message != "invalid token" else self._invalid
            raise unauthorized(headers, self.name, e.message) from None

    async def _verify(self, token: str) -> Consumer:
        cfg = self.config
        t = parse(token, max_bytes=cfg.max_token_bytes, algorithms=self._allowed)
        iss = t.claims.get("iss")
        if not isinstance(iss, str):
            raise TokenError(detail="missing iss")
        issuer = self._issuers.get(iss)
        owner: Consumer | None = None
        source: JwksCache | None = None
        if issuer is not None:
            keys = issuer.keys
            if issuer.jwks is not None:
                source = issuer.jwks
                version = source.version
                keys = await source.keys_for(t.kid)
                if source.version != version:
                    source = None  # rotated while waiting: not kept (which version verified?)
            audiences = issuer.audiences
            credential = issuer.credential
        elif cfg.consumer_credentials:
            hit = self.env.consumers.by_credential("jwt", iss)
            if hit is None or not isinstance(hit[1], JwtEntry):
                raise TokenError(detail="unknown issuer")
            owner, entry = hit[0], hit[1]
            keys = [k for k in entry.keys if k.kid is None or k.kid == t.kid]
            audiences = cfg.audiences
            credential = entry.credential
        else:
            raise TokenError(detail="unknown issuer")
        if not any(k.verify(t.alg, t.signing_input, t.signature) for k in keys):
            raise TokenError(detail="bad signature")
        check_claims(
            t.claims,
            now=self._clock(),
            leeway=cfg.leeway,
            required=cfg.required_claims,
            audiences=audiences,
            max_age=cfg.max_age,
        )
        consumer = self._consumer(t, owner, credential)
        if issuer is None or issuer.jwks is None or source is not None:
            self._cache.put(token, t.claims, consumer, consumer_pairs(consumer), source)
        return consumer

    def _consumer(self, t: ParsedToken, owner: Consumer | None, credential: str) -> Consumer:
        claims = t.claims
        scopes = scopes_of(claims)
        if owner is None and self.config.consumer_claim is not None:
            ref = claims.get(self.config.consumer_claim)
            if isinstance(ref, str):
                owner = self.env.consumers.get(ref) or self._by_id.get(ref)
            if owner is None:
                raise TokenError(detail="token names no configured consumer")
        if owner is not None:
            return Consumer(
                id=owner.id,
                username=owner.username,
                groups=owner.groups,
                credential=credential,
                claims=claims,
                scopes=scopes,
            )
        sub = claims.get("sub")
        subject = sub if isinstance(sub, str) and sub else str(claims.get("iss"))
        groups: frozenset[str] = frozenset()
        if self.config.groups_claim is not None:
            g = lookup_claim(claims, self.config.groups_claim)
            if isinstance(g, str):
                groups = frozenset(g.split())
            elif isinstance(g, list):
                groups = frozenset(x for x in g if isinstance(x, str))
        return Consumer(
            id=subject,
            username=subject,
            groups=groups,
            credential=credential,
            claims=claims,
            scopes=scopes,
        )

    def identity_pairs(self, consumer: Consumer) -> list[tuple[bytes, bytes]] | None:
        return self._cache.pairs(consumer)

    def hide(self, ctx: RequestContext) -> None:
        hide_bearer(ctx.upstream_request, self.config)

    def _hide_in(self, request: Request) -> None:
        hide_bearer(request, self.config)

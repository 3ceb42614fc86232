"""The ``oidc`` plugin: OpenID Connect login for browsers, sessions, and JWT bearer tokens."""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar
from urllib.parse import unquote_plus, urlencode

from portway.errors import GatewayError, UnavailableError
from portway.http.models import Response
from portway.pipeline.context import Consumer, ContextKey, RequestContext
from portway.pipeline.plugin import PluginConfig, PluginEnv
from portway.plugins._identity.base import IdentityPlugin
from portway.plugins._identity.cache import TtlLru
from portway.plugins._identity.errors import (
    INVALID_TOKEN,
    LoginRequiredError,
    MissingCredentialsError,
    challenge,
    missing,
    unauthorized,
)
from portway.plugins._identity.hashing import credential_id
from portway.plugins._identity.headers import STANDARD, header_value, lookup_claim
from portway.plugins._identity.tokens import BearerSourceConfig, bearer_token, remove_cookie
from portway.plugins._ratelimit.stores import key_prefix, shared_redis
from portway.plugins.jwt.jwks import Fetch
from portway.plugins.jwt.token import scopes_of
from portway.plugins.oidc import pages
from portway.plugins.oidc.config import SIGNING_ALGS, OidcConfig
from portway.plugins.oidc.cookies import chunk_names, clear_chunked, parse_cookies
from portway.plugins.oidc.login import (
    LoginCookie,
    authorization_url,
    new_login,
    safe_return,
    state_digest,
)
from portway.plugins.oidc.provider import GrantRejected, Provider, ProviderError
from portway.plugins.oidc.refresh import Refresher, expiry
from portway.plugins.oidc.seal import Sealer
from portway.plugins.oidc.sessions import (
    CookieSessions,
    RedisSessions,
    Session,
    SessionStoreError,
    new_id,
)
from portway.plugins.oidc.tokens import (
    InvalidToken,
    check_access_token,
    check_id_token,
    verify_signature,
)
from portway.state.base import LuaScript, StoreUnavailableError
from portway.state.redis import RedisStore

log = logging.getLogger("portway.plugins.oidc")

#: ``Set-Cookie`` values the response must carry (added by ``on_response``)
SET_COOKIES = ContextKey[list[str]]("oidc.set_cookies")
#: the request's session, for plugins after this one
SESSION = ContextKey[Session]("oidc.session")

_CLAIM_ONCE = LuaScript(
    "if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 1 else return 0 end"
)
_BEARER = BearerSourceConfig()


class OidcPlugin(IdentityPlugin[OidcConfig]):
    """Signs browser users in with an OpenID provider and keeps them in a session.

    Per request: the callback and logout paths are answered by the plugin; a valid session
    (cookie or Redis store, idle and absolute timeouts) authenticates the request, its access
    token refreshed shortly before expiry (one refresh per session at a time); with
    ``bearer: true`` a JWT access token from the provider does too. Otherwise, by
    ``unauthenticated``: a redirect to the provider (a 401 for XHR, JSON-only or non-GET
    requests), a 401, or the request passes without a consumer. Client-sent identity headers
    (``X-Consumer-*`` and the ``forward`` headers) are always removed, and the plugin's own
    cookies never reach the upstream. See docs/authentication.md ("OIDC login").
    """

    name = "oidc"
    scheme = "Bearer"
    Config: ClassVar[type[PluginConfig]] = OidcConfig

    def __init__(
        self,
        config: OidcConfig,
        env: PluginEnv,
        *,
        fetch: Fetch | None = None,
        clock: Any = time.time,
    ) -> None:
        super().__init__(config, env)
        self.clock = clock
        self.provider = Provider(config, fetch=fetch) if fetch is not None else Provider(config)
        sealer = Sealer(config.session.all_secrets)
        opts = config.session
        self._redis: RedisStore | None = None
        self.sessions: CookieSessions
        if opts.store == "redis":
            self._redis = shared_redis(env, opts.redis)
            prefix = key_prefix(env, opts.redis, "oidc:")
            self.sessions = RedisSessions(opts, sealer, self._redis, prefix + "session:")
            self._state_prefix = prefix + "state:"
        else:
            self.sessions = CookieSessions(opts, sealer)
            self._state_prefix = ""
        self._login = LoginCookie(config, sealer)
        self._cookie_names = frozenset([*chunk_names(opts.cookie.name), self._login.name])
        self._used: TtlLru[str, bool] = TtlLru(100_000)
        self._touch_every = min(60.0, opts.idle_timeout / 4)
        self._audiences = config.bearer_audiences or [config.client_id]
        self._by_id = {c.id: c for c in env.consumers.all()}
        fwd = config.forward
        names = [h.lower() for h in fwd.claims_headers]
        names += [h.lower() for h in (fwd.id_token_header,) if h is not None]
        at = fwd.access_token_header
        if at is not None and at.lower() != "authorization":
            names.append(at.lower())
        self._managed = frozenset(n.encode("ascii") for n in names) | STANDARD
        self._invalid = [challenge("Bearer", config.realm, error="invalid_token")]
        self._expired = [
            challenge(
                "Bearer", config.realm, error="invalid_token", error_description="token expired"
            )
        ]
        self._bearer_algs = SIGNING_ALGS
        # (the clock read through the plugin, which tests may replace)
        self.refresher = Refresher(
            self.provider, self.sessions, self._check_id_token, lambda: self.clock()
        )

    @property
    def refreshes(self) -> int:
        """Refresh grants sent to the provider; for tests and metrics."""
        return self.refresher.refreshes

    async def start(self) -> None:
        await self.provider.start()

    async def aclose(self) -> None:
        await self.provider.aclose()

    # -- request phases -----------------------------------------------------------------

    async def on_request(self, ctx: RequestContext) -> Response | None:
        resp = await self.intercept(ctx)
        if resp is not None:
            return resp
        try:
            return await super().on_request(ctx)
        except MissingCredentialsError:
            if self.config.unauthenticated == "pass":
                return None
            raise

    async def on_response(self, ctx: RequestContext) -> None:
        cookies = ctx.state.pop(SET_COOKIES)
        if cookies and ctx.response is not None:
            h = ctx.response.headers
            for c in cookies:
                h.add("set-cookie", c)
            h.set("cache-control", "no-store")

    async def on_error(self, ctx: RequestContext, exc: BaseException) -> Response | None:
        # this plugin's own failures (provider or session store down) get a page in browsers
        if isinstance(exc, GatewayError) and exc.source == self.name and exc.status >= 500:
            return pages.error(
                ctx.request,
                exc.status,
                exc.message,
                exc.code,
                ctx.request_id or None,
                retry=self._here(ctx),
            )
        return None

    async def intercept(self, ctx: RequestContext) -> Response | None:
        path = ctx.request.path
        if path == self.config.redirect_path:
            return await self._callback(ctx)
        if path == self.config.logout.path and ctx.request.method in ("GET", "POST"):
            return await self._logout(ctx)
        return None

    def hide(self, ctx: RequestContext) -> None:
        # the session's own access token replaces a client's Authorization; a bearer client's
        # token is removed here
        if SESSION not in ctx.state:
            h = ctx.upstream_request.headers
            kept = [v for v in h.get_all("authorization") if not v.lower().startswith("bearer ")]
            h.remove("authorization")
            for v in kept:
                h.add("authorization", v)

    # -- authentication -----------------------------------------------------------------

    async def authenticate(self, ctx: RequestContext) -> Consumer:
        self._prepare(ctx)
        req = ctx.request
        cookies = parse_cookies(req.headers)
        now = self.clock()
        try:
            session, present = await self.sessions.load(cookies)
        except SessionStoreError as e:
            raise UnavailableError("session store unavailable", source=self.name) from e
        if session is not None and session.expired(now, self.config.session):
            await self._end(ctx, session, present)
            session = None
        elif session is None and present:
            # unreadable (tampered, foreign secret) or revoked: stop the browser sending it
            self._cookies(ctx).extend(
                clear_chunked(self.sessions.name, self.config.session.cookie, present)
            )
        if session is not None:
            session = await self._fresh(ctx, session, present, now)
        if session is not None:
            if now - session.seen >= self._touch_every:
                session.seen = now
                await self._save(ctx, session, now, present)
            ctx.state[SESSION] = session
            self._forward(ctx, session)
            return self._consumer(session.claims, session.extra.get("scope"))
        if self.config.bearer:
            try:
                token = bearer_token(req, _BEARER)
            except ValueError:
                raise unauthorized(self._invalid, self.name, INVALID_TOKEN) from None
            if token is not None:
                return await self._verify_bearer(ctx, token)
        raise await self._no_credentials(ctx)

    def _prepare(self, ctx: RequestContext) -> None:
        h = ctx.upstream_request.headers
        if any(k in self._managed for k, _ in h.raw()):
            h.remove_many(self._managed)
        if h.get_all("cookie"):
            for name in parse_cookies(h).keys() & self._cookie_names:
                remove_cookie(h, name)

    def _cookies(self, ctx: RequestContext) -> list[str]:
        pending = ctx.state.get(SET_COOKIES)
        if pending is None:
            pending = []
            ctx.state[SET_COOKIES] = pending
        return pending

    async def _save(self, ctx: RequestContext, session: Session, now: float, present: int) -> None:
        try:
            self._cookies(ctx).extend(await self.sessions.save(session, now, present))
        except SessionStoreError as e:
            raise UnavailableError("session store unavailable", source=self.name) from e
        except ValueError as e:  # too large for cookies
            log.error("oidc session not saved: %s", e)
            raise GatewayError("session too large", source=self.name) from e

    async def _end(self, ctx: RequestContext, session: Session | None, present: int) -> None:
        try:
            self._cookies(ctx).extend(await self.sessions.delete(session, present))
        except SessionStoreError:
            log.warning("could not delete an ended oidc session (store unavailable)")
            self._cookies(ctx).extend(
                clear_chunked(self.sessions.name, self.config.session.cookie, present)
            )

    def _consumer(self, claims: dict[str, Any], scope: Any) -> Consumer:
        cfg = self.config
        ref = header_value(lookup_claim(claims, cfg.consumer_claim)) or str(claims.get("sub", ""))
        owner = self.env.consumers.get(ref) or self._by_id.get(ref)
        groups: set[str] = set(owner.groups) if owner is not None else set()
        if cfg.groups_claim is not None:
            g = lookup_claim(claims, cfg.groups_claim)
            if isinstance(g, str):
                groups.update(g.split())
            elif isinstance(g, list):
                groups.update(x for x in g if isinstance(x, str))
        scopes = scopes_of({"scope": scope}) if isinstance(scope, str) else scopes_of(claims)
        return Consumer(
            id=owner.id if owner is not None else ref,
            username=owner.username if owner is not None else ref,
            groups=frozenset(groups),
            credential=credential_id(self.name, f"{cfg.issuer}|{claims.get('sub')}"),
            claims=claims,
            scopes=scopes,
        )

    def _forward(self, ctx: RequestContext, session: Session) -> None:
        fwd = self.config.forward
        h = ctx.upstream_request.headers
        if fwd.access_token_header is not None:
            if fwd.access_token_header.lower() == "authorization":
                h.set("authorization", "Bearer " + session.access_token)
            else:
                h.set(fwd.access_token_header, session.access_token)
        if fwd.id_token_header is not None and session.id_token:
            h.set(fwd.id_token_header, session.id_token)
        self._claims_headers(ctx, session.claims)

    def _claims_headers(self, ctx: RequestContext, claims: dict[str, Any]) -> None:
        h = ctx.upstream_request.headers
        for header, claim in self.config.forward.claims_headers.items():
            v = header_value(lookup_claim(claims, claim))
            if v is not None:
                h.set(header, v)

    async def _verify_bearer(self, ctx: RequestContext, token: str) -> Consumer:
        cfg = self.config
        if len(token) > cfg.max_token_bytes:
            raise unauthorized(self._invalid, self.name, INVALID_TOKEN)
        try:
            header, claims = await verify_signature(self.provider, token, self._bearer_algs)
            check_access_token(
                header,
                claims,
                issuer=cfg.issuer,
                audiences=self._audiences,
                now=self.clock(),
                leeway=cfg.leeway,
            )
            if not header_value(lookup_claim(claims, cfg.consumer_claim)):
                raise InvalidToken(f"no {cfg.consumer_claim} claim to name the consumer")
        except InvalidToken as e:
            ctx.extra["auth_failure"] = e.detail
            headers = self._expired if e.expired else self._invalid
            raise unauthorized(
                headers, self.name, "token expired" if e.expired else INVALID_TOKEN
            ) from None
        except ProviderError as e:
            raise UnavailableError(
                "identity provider unavailable", status=e.status, source=self.name
            ) from e
        self._claims_headers(ctx, claims)
        return self._consumer(claims, claims.get("scope"))

    async def _no_credentials(self, ctx: RequestContext) -> MissingCredentialsError:
        req = ctx.request
        if self.config.unauthenticated != "redirect" or pages.wants_json(req):
            return missing(self._challenges, self.name)
        query = req.query.decode("latin-1")
        target = safe_return(req.path + ("?" + query if query else ""))
        location, cookie = await self._start_login(ctx, target)
        return LoginRequiredError(
            "login required",
            headers=[("location", location), ("set-cookie", cookie), ("cache-control", "no-store")],
            source=self.name,
        )

    async def _start_login(self, ctx: RequestContext, target: str) -> tuple[str, str]:
        try:
            meta = await self.provider.metadata()
        except ProviderError as e:
            raise UnavailableError(
                "identity provider unavailable", status=e.status, source=self.name
            ) from e
        now = self.clock()
        cookies = parse_cookies(ctx.request.headers)
        pending = self._login.read(cookies, now)
        login = new_login(self.config, target, now)
        pending.append(login)
        url = authorization_url(
            self.config, meta.authorization_endpoint, self._redirect_uri(ctx), login
        )
        return url, self._login.write(pending)

    def _base(self, ctx: RequestContext) -> str:
        if self.config.public_url is not None:
            return self.config.public_url
        req = ctx.request
        # the Host field as sent (with its port); Request.host is the bare name
        return f"{req.scheme}://{req.headers.get('host') or req.host}"

    def _redirect_uri(self, ctx: RequestContext) -> str:
        return self._base(ctx) + self.config.redirect_path

    def _here(self, ctx: RequestContext) -> str:
        q = ctx.request.query.decode("latin-1")
        return safe_return(ctx.request.path + ("?" + q if q else ""))

    # -- refresh ------------------------------------------------------------------------

    async def _fresh(
        self, ctx: RequestContext, session: Session, present: int, now: float
    ) -> Session | None:
        """``session`` with an access token that is not about to expire (refreshed once,
        shared by concurrent requests), or ``None`` when the provider ended the grant."""
        cfg = self.config
        rt = session.refresh_token
        if not cfg.refresh or rt is None or session.expires_at is None:
            return session
        if session.expires_at - now > cfg.refresh_before:
            return session
        try:
            new = await self.refresher.refreshed(session)
        except ProviderError as e:
            if session.expires_at > now:
                return session  # still valid: try again on a later request
            raise UnavailableError(
                "identity provider unavailable", status=e.status, source=self.name
            ) from e
        if new is None:
            await self._end(ctx, session, present)
            return None
        new.seen = now
        await self._save(ctx, new, now, present)
        return new

    async def _check_id_token(self, token: str, nonce: str | None, now: float) -> dict[str, Any]:
        """The claims of a valid ID token (``nonce`` checked unless ``None``: refreshes)."""
        meta = await self.provider.metadata()
        _, claims = await verify_signature(self.provider, token, meta.algorithms)
        check_id_token(
            claims,
            issuer=self.config.issuer,
            client_id=self.config.client_id,
            nonce=nonce,
            now=now,
            leeway=self.config.leeway,
        )
        return claims

    # -- callback and logout ------------------------------------------------------------

    async def _consume_state(self, state: str) -> bool:
        """Whether ``state`` is used for the first time (remembered until it would expire)."""
        key = state_digest(state)
        ttl = self.config.login_timeout
        if self._redis is not None:
            try:
                r = await self._redis.eval_script(
                    _CLAIM_ONCE, [self._state_prefix + key], [int(ttl * 1000)]
                )
                return int(r) == 1
            except StoreUnavailableError as e:
                raise UnavailableError("session store unavailable", source=self.name) from e
        if self._used.get(key):
            return False
        self._used.put(key, True, ttl)
        return True

    async def _callback(self, ctx: RequestContext) -> Response:
        req = ctx.request
        cfg = self.config
        rid = ctx.request_id or None
        params: dict[str, str] = {}
        for part in req.query.split(b"&"):
            k, _, v = part.partition(b"=")
            if not k:
                continue
            name = unquote_plus(k.decode("latin-1"))
            if name in params:
                return pages.error(
                    req,
                    400,
                    "repeated parameter in the login response",
                    "bad_request",
                    rid,
                    retry="/",
                )
            params[name] = unquote_plus(v.decode("latin-1"))
        now = self.clock()
        cookies = parse_cookies(req.headers)
        pending = self._login.read(cookies, now)
        state = params.get("state", "")
        login = self._login.find(pending, state) if state else None
        if login is not None:
            pending.remove(login)
        self._cookies(ctx).append(self._login.write(pending))
        iss = params.get("iss")
        if iss is not None and iss != cfg.issuer:
            # RFC 9207: a response from another provider (mix-up attack)
            return pages.error(
                req, 400, "login response from an unexpected issuer", "bad_request", rid, retry="/"
            )
        if login is None or not await self._consume_state(state):
            return pages.error(
                req,
                400,
                "the login expired or was already used; please sign in again",
                "invalid_state",
                rid,
                retry="/",
            )
        retry = login.return_to
        if "error" in params:
            err = params["error"][:64]
            status = 403 if err == "access_denied" else 401
            return pages.error(
                req,
                status,
                f"the identity provider refused the login ({err})",
                "login_failed",
                rid,
                retry=retry,
            )
        code = params.get("code")
        if not code:
            return pages.error(
                req, 400, "the login response has no code", "bad_request", rid, retry=retry
            )
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._redirect_uri(ctx),
        }
        if login.verifier is not None:
            form["code_verifier"] = login.verifier
        try:
            data = await self.provider.token_request(form)
            id_token = data.get("id_token")
            if not isinstance(id_token, str):
                raise InvalidToken("token response without id_token")
            claims = await self._check_id_token(id_token, login.nonce, now)
        except GrantRejected as e:
            return pages.error(
                req,
                400,
                f"the identity provider refused the code ({e.error[:64]})",
                "login_failed",
                rid,
                retry=retry,
            )
        except InvalidToken as e:
            log.warning("login refused: invalid ID token (%s)", e.detail)
            ctx.extra["auth_failure"] = e.detail
            return pages.error(
                req, 401, "the identity token was not valid", "login_failed", rid, retry=retry
            )
        except ProviderError as e:
            return pages.error(
                req,
                e.status,
                "the identity provider is unavailable",
                "provider_unavailable",
                rid,
                retry=retry,
            )
        # a previous session of this browser ends; the new one gets a new id (no fixation)
        try:
            old, present = await self.sessions.load(cookies)
        except SessionStoreError:
            old, present = None, len(cookies.keys() & set(chunk_names(self.sessions.name)))
        if old is not None:
            try:
                await self.sessions.revoke(old)
            except SessionStoreError:
                log.warning("could not revoke the replaced oidc session (store unavailable)")
        rt = data.get("refresh_token")
        session = Session(
            sid=new_id(),
            sub=str(claims["sub"]),
            claims=claims,
            created=now,
            seen=now,
            access_token=data["access_token"],
            expires_at=expiry(data, now),
            refresh_token=rt if isinstance(rt, str) else None,
            id_token=id_token,
            extra={"scope": data.get("scope")},
        )
        await self._save(ctx, session, now, present)
        target = safe_return(login.return_to)
        if cfg.session.cookie.same_site == "strict":
            return pages.continue_page(target, [])
        return pages.redirect(target)

    async def _logout(self, ctx: RequestContext) -> Response:
        cfg = self.config
        cookies = parse_cookies(ctx.request.headers)
        try:
            session, present = await self.sessions.load(cookies)
        except SessionStoreError:
            session, present = None, len(cookies.keys() & set(chunk_names(self.sessions.name)))
        await self._end(ctx, session, present)
        after = cfg.logout.redirect_after
        location = after
        if cfg.logout.end_session and session is not None and session.id_token:
            try:
                meta = await self.provider.metadata()
            except ProviderError:
                meta = None  # the local session is gone anyway
            if meta is not None and meta.end_session_endpoint:
                absolute = self._base(ctx) + after if after.startswith("/") else after
                params = {
                    "id_token_hint": session.id_token,
                    "post_logout_redirect_uri": absolute,
                    "client_id": cfg.client_id,
                }
                sep = "&" if "?" in meta.end_session_endpoint else "?"
                location = meta.end_session_endpoint + sep + urlencode(params)
        return pages.redirect(location)

"""The ``auth`` combinator plugin."""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

from portway.errors import GatewayError, UnauthorizedError
from portway.http.models import Response
from portway.pipeline.context import Consumer, RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, PluginEnv, Stage, implements
from portway.pipeline.registry import registry
from portway.plugins._identity.base import IdentityPlugin, admit, anonymous_consumer
from portway.plugins._identity.errors import MISSING, LoginRequiredError, MissingCredentialsError
from portway.plugins._identity.headers import strip_identity
from portway.plugins.auth.config import AuthConfig


def _challenges(e: GatewayError) -> list[str]:
    return [v for k, v in e.headers if k.lower() == "www-authenticate"]


def _one_per_scheme(challenges: list[str]) -> list[tuple[str, str]]:
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for c in challenges:
        scheme = c.split(" ", 1)[0].lower()
        if scheme not in seen:
            seen.add(scheme)
            out.append(("www-authenticate", c))
    return out


class AuthPlugin(Plugin[AuthConfig]):
    """Runs several authentication methods as one step.

    ``any``: members are tried in order and the first success wins. If none succeeds the 401
    carries one ``WWW-Authenticate`` per scheme tried; the ``anonymous`` consumer is used only
    when *no* member found a credential (a wrong credential is never downgraded to anonymous).
    A member that could not decide (e.g. introspection endpoint down) makes the request fail
    with its error only if no other member succeeds.

    ``all``: every member must succeed and all members that resolve to configured consumers
    must resolve to the same one; the first member's consumer is kept, with the groups, scopes
    and claims of the others merged in.

    Members' own ``anonymous`` settings are ignored; their ``hide_credentials`` apply.
    Members with paths of their own (``oidc``'s callback and logout) answer them first; when
    no member found a credential and one of them can start a login (``oidc``), the answer is
    its login redirect rather than a 401. Members' ``on_response`` hooks (``oidc`` sets its
    session cookies there) run as part of this plugin's.
    """

    name = "auth"
    stage = Stage.authn
    Config: ClassVar[type[PluginConfig]] = AuthConfig

    def __init__(self, config: AuthConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._members: list[IdentityPlugin[Any]] = []
        for m in config.members:
            cls = registry.get(m.name)
            plugin = cls(cls.Config.model_validate(m.config), env)
            if not isinstance(plugin, IdentityPlugin):
                raise ValueError(f"{m.name} is not an authentication method")
            self._members.append(plugin)
        self._anonymous = anonymous_consumer(env, config.anonymous)
        self._all = config.all_of is not None
        self.sync_hooks = all(m.sync_hooks for m in self._members)
        self._interceptors = [
            m for m in self._members if type(m).intercept is not IdentityPlugin.intercept
        ]
        self._responders = [m for m in self._members if implements(m, "on_response")]
        if not self._responders:
            self.unused_phases = frozenset({"on_response"})

    async def start(self) -> None:
        for m in self._members:
            await m.start()

    async def aclose(self) -> None:
        for m in self._members:
            with contextlib.suppress(Exception):
                await m.aclose()

    async def on_request(self, ctx: RequestContext) -> Response | None:
        for m in self._interceptors:
            resp = await m.intercept(ctx)
            if resp is not None:
                return resp
        strip_identity(ctx.upstream_request.headers)
        consumer = await (self._authenticate_all(ctx) if self._all else self._authenticate_any(ctx))
        for m in self._members:
            if m.config.hide_credentials:
                m.hide(ctx)
        admit(ctx, consumer)
        return None

    async def on_response(self, ctx: RequestContext) -> None:
        for m in self._responders:
            await m.on_response(ctx)

    async def _authenticate_any(self, ctx: RequestContext) -> Consumer:
        challenges: list[str] = []
        rejected: UnauthorizedError | None = None
        undecided: GatewayError | None = None
        login: LoginRequiredError | None = None
        for m in self._members:
            try:
                return await m.authenticate(ctx)
            except MissingCredentialsError as e:
                if isinstance(e, LoginRequiredError):
                    login = login or e
                challenges.extend(_challenges(e))
            except UnauthorizedError as e:
                challenges.extend(_challenges(e))
                rejected = rejected or e
            except GatewayError as e:
                challenges.extend(c for mc in m.challenges() for c in [mc])
                undecided = undecided or e
        if undecided is not None:
            raise undecided
        if rejected is None and self._anonymous is not None:
            return self._anonymous
        if rejected is None and login is not None:
            raise login
        raise UnauthorizedError(
            rejected.message if rejected is not None else MISSING,
            headers=_one_per_scheme(challenges),
            source=self.name,
        )

    async def _authenticate_all(self, ctx: RequestContext) -> Consumer:
        found: list[Consumer] = []
        missing: list[MissingCredentialsError] = []
        for m in self._members:
            try:
                found.append(await m.authenticate(ctx))
            except MissingCredentialsError as e:
                missing.append(e)
        if missing:
            if not found and self._anonymous is not None:
                return self._anonymous
            login = next((e for e in missing if isinstance(e, LoginRequiredError)), None)
            if login is not None:
                raise login
            raise UnauthorizedError(
                MISSING,
                headers=_one_per_scheme([c for e in missing for c in _challenges(e)]),
                source=self.name,
            )
        configured = {
            c.id for c in found if (d := self.env.consumers.get(c.username)) and d.id == c.id
        }
        if len(configured) > 1:
            # e.g. Alice's certificate with Bob's token: no single identity to forward
            raise UnauthorizedError(
                "invalid credentials",
                headers=_one_per_scheme([c for m in self._members for c in m.challenges()]),
                source=self.name,
            )
        primary = found[0]
        claims: dict[str, Any] = {}
        for c in reversed(found):
            claims.update(c.claims)
        return Consumer(
            id=primary.id,
            username=primary.username,
            groups=frozenset().union(*(c.groups for c in found)),
            credential=primary.credential,
            claims=claims,
            scopes=frozenset().union(*(c.scopes for c in found)),
        )

"""Base class and config of the authentication plugins.

An :class:`IdentityPlugin` implements :meth:`~IdentityPlugin.authenticate` (find and check
the credential, return the consumer) and :meth:`~IdentityPlugin.hide` (remove the credential
from the upstream request). The base's ``on_request`` does the rest the same way for every
method: strip client-supplied identity headers first, authenticate, fall back to the
``anonymous`` consumer when no credential was presented, hide the credential, then set
``ctx.consumer`` and the ``X-Consumer-*`` headers. The ``auth`` combinator calls the same two
methods on its members.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, TypeVar

from pydantic import Field

from portway.http.models import Response
from portway.pipeline.context import Consumer, RequestContext
from portway.pipeline.plugin import Plugin, PluginConfig, PluginEnv, Stage
from portway.plugins._identity.errors import MissingCredentialsError, challenge
from portway.plugins._identity.headers import set_consumer_headers, strip_identity


class IdentityConfig(PluginConfig):
    """Options every authentication plugin has."""

    realm: str = Field("portway", description="realm named in WWW-Authenticate")
    anonymous: str | None = Field(
        None,
        description="username of the consumer to use when no credential is presented "
        "(a presented but invalid credential is still refused)",
    )
    hide_credentials: bool = Field(
        False, description="remove the credential before forwarding upstream"
    )


C = TypeVar("C", bound=IdentityConfig)


def anonymous_consumer(env: PluginEnv, username: str | None) -> Consumer | None:
    """The configured anonymous consumer; ``ValueError`` when it is not a known consumer."""
    if username is None:
        return None
    c = env.consumers.get(username)
    if c is None:
        raise ValueError(f"anonymous consumer {username!r} is not defined under consumers")
    return dataclasses.replace(c, anonymous=True, credential=None)


def admit(
    ctx: RequestContext,
    consumer: Consumer,
    pairs: list[tuple[bytes, bytes]] | None = None,
    *,
    stripped: bool = False,
) -> None:
    """Record ``consumer`` as the request's identity and tell the upstream (see
    :func:`set_consumer_headers` for ``pairs`` and ``stripped``)."""
    ctx.consumer = consumer
    set_consumer_headers(ctx.upstream_request.headers, consumer, pairs, stripped=stripped)


class IdentityPlugin(Plugin[C]):
    """An authentication method (see the module docstring for the shared flow)."""

    stage = Stage.authn
    #: auth-scheme named in WWW-Authenticate
    scheme: ClassVar[str] = ""
    #: :meth:`authenticate_now` decides without awaiting: ``on_request`` calls it directly
    #: (no coroutine per request for the method's own step)
    sync_authenticate: ClassVar[bool] = False

    def __init__(self, config: C, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._anonymous = anonymous_consumer(env, config.anonymous)
        self._challenges = [challenge(self.scheme, config.realm)]

    def challenges(self) -> list[str]:
        """``WWW-Authenticate`` values for a request without (valid) credentials."""
        return self._challenges

    async def authenticate(self, ctx: RequestContext) -> Consumer:
        """Return the consumer the request's credential identifies.

        Raises :class:`MissingCredentialsError` when no credential of this kind is present and
        :class:`~portway.errors.UnauthorizedError` when one is present but not accepted.
        """
        raise NotImplementedError

    def authenticate_now(self, ctx: RequestContext) -> Consumer:
        """:meth:`authenticate` of a method with ``sync_authenticate``."""
        raise NotImplementedError

    def hide(self, ctx: RequestContext) -> None:
        """Remove this method's credential from ``ctx.upstream_request``."""

    def identity_pairs(self, consumer: Consumer) -> list[tuple[bytes, bytes]] | None:
        """The ``X-Consumer-*`` fields of ``consumer`` when this method keeps them (methods
        that return the same consumer objects again and again), else ``None``."""
        return None

    async def intercept(self, ctx: RequestContext) -> Response | None:
        """Answer a request addressed to the method itself (a login callback, a logout path)
        before authentication; ``None`` for every other request. Methods with such paths
        override it and call it from their ``on_request``; the ``auth`` combinator calls it
        on its members that override it."""
        return None

    async def on_request(self, ctx: RequestContext) -> Response | None:
        strip_identity(ctx.upstream_request.headers)
        current = ctx.consumer
        if self._anonymous is not None and current is not None and not current.anonymous:
            # another method already authenticated the request: with an anonymous fallback
            # configured, methods combine as "any of" (Kong's convention)
            set_consumer_headers(ctx.upstream_request.headers, current)
            return None
        try:
            if self.sync_authenticate:
                consumer = self.authenticate_now(ctx)
            else:
                consumer = await self.authenticate(ctx)
        except MissingCredentialsError:
            if self._anonymous is None:
                raise
            consumer = current if current is not None else self._anonymous
        if self.config.hide_credentials:
            self.hide(ctx)
        # identity fields were stripped above and nothing since adds them
        admit(ctx, consumer, self.identity_pairs(consumer), stripped=True)
        return None

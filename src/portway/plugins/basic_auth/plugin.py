"""The ``basic_auth`` plugin."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import ClassVar

from portway.pipeline.context import Consumer, RequestContext
from portway.pipeline.plugin import PluginConfig, PluginEnv
from portway.plugins._identity.base import IdentityPlugin
from portway.plugins._identity.cache import TtlLru
from portway.plugins._identity.credentials import BasicEntry
from portway.plugins._identity.errors import missing, unauthorized
from portway.plugins._identity.hashing import (
    dummy_hash,
    dummy_params,
    keyed_digest,
    verify_password,
)
from portway.plugins._identity.tokens import AmbiguousCredentialsError, scheme_credentials
from portway.plugins.basic_auth.config import BasicAuthConfig

MAX_CREDENTIALS = 4096


def _verify_any(hashes: tuple[str, ...], password: str) -> bool:
    # every stored hash is checked (no early exit) so timing does not reveal which matched
    ok = False
    for h in hashes:
        ok = verify_password(h, password) or ok
    return ok


def _verify_dummy(params: str, password: str) -> None:
    verify_password(dummy_hash(params), password)


class BasicAuthPlugin(IdentityPlugin[BasicAuthConfig]):
    """Authenticates ``Authorization: Basic`` credentials against argon2/bcrypt hashes.

    Verification runs in a worker thread (bounded by ``max_concurrent_verifications``) so the
    event loop never blocks on a hash; recent successes are remembered in a bounded LRU keyed
    by a keyed BLAKE2b digest of user and password, so a client that keeps its connection busy
    pays the hash cost once per ``cache_ttl``. Unknown users are checked against a dummy hash
    of the scheme and cost most configured hashes have (a bcrypt account is not told apart
    from an unknown user by an argon2 dummy's different cost), so a response's timing does
    not reveal whether the user exists.
    """

    name = "basic_auth"
    scheme = "Basic"
    Config: ClassVar[type[PluginConfig]] = BasicAuthConfig

    def __init__(self, config: BasicAuthConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._cache: TtlLru[bytes, Consumer] = TtlLru(config.cache_size)
        self._sem = asyncio.Semaphore(config.max_concurrent_verifications)
        #: the consumer directory ``_dummy`` was computed for, and the dummy's parameters
        self._dummy_for: object = None
        self._dummy = ""

    def dummy_params(self) -> str:
        """Scheme and cost of the hash unknown users are verified against (see
        :func:`~portway.plugins._identity.hashing.hash_params`)."""
        directory = self.env.consumers
        if directory is not self._dummy_for:
            entries = directory.credentials_of_kind("basic_auth")
            self._dummy = dummy_params(
                h for _, _, e in entries if isinstance(e, BasicEntry) for h in e.hashes
            )
            self._dummy_for = directory
        return self._dummy

    def _decode(self, ctx: RequestContext) -> tuple[str, str]:
        try:
            raw = scheme_credentials(ctx.request.headers, "basic")
        except AmbiguousCredentialsError:
            raise unauthorized(self._challenges, self.name) from None
        if raw is None:
            raise missing(self._challenges, self.name)
        if len(raw) > MAX_CREDENTIALS:
            raise unauthorized(self._challenges, self.name)
        try:
            decoded = base64.b64decode(raw.encode("ascii"), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeError, ValueError):
            raise unauthorized(self._challenges, self.name) from None
        user, sep, password = decoded.partition(":")
        if not sep or not user or any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
            raise unauthorized(self._challenges, self.name)
        return user, password

    async def authenticate(self, ctx: RequestContext) -> Consumer:
        user, password = self._decode(ctx)
        cache_key = keyed_digest(user, password)
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        hit = self.env.consumers.by_credential("basic_auth", user)
        entry = hit[1] if hit is not None else None
        if hit is None or not isinstance(entry, BasicEntry):
            async with self._sem:
                await asyncio.to_thread(_verify_dummy, self.dummy_params(), password)
            raise unauthorized(self._challenges, self.name)
        async with self._sem:
            ok = await asyncio.to_thread(_verify_any, entry.hashes, password)
        if not ok:
            raise unauthorized(self._challenges, self.name)
        c = hit[0]
        consumer = Consumer(
            id=c.id, username=c.username, groups=c.groups, credential=entry.credential
        )
        self._cache.put(cache_key, consumer, self.config.cache_ttl)
        return consumer

    def hide(self, ctx: RequestContext) -> None:
        h = ctx.upstream_request.headers
        kept = [v for v in h.get_all("authorization") if v.strip()[:6].lower() != "basic "]
        h.remove("authorization")
        for v in kept:
            h.add("authorization", v)

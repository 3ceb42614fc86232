"""The ``key_auth`` plugin."""

from __future__ import annotations

from typing import ClassVar

from portway.pipeline.context import Consumer, RequestContext
from portway.pipeline.plugin import PluginConfig, PluginEnv
from portway.plugins._identity.base import IdentityPlugin
from portway.plugins._identity.credentials import KeyEntry
from portway.plugins._identity.errors import unauthorized
from portway.plugins._identity.hashing import digests_equal
from portway.plugins._identity.headers import consumer_pairs
from portway.plugins.key_auth.config import KeyAuthConfig
from portway.plugins.key_auth.hooks import KeyAuthHooks


class KeyAuthPlugin(IdentityPlugin[KeyAuthConfig]):
    """Authenticates by API key.

    The key is hashed with SHA-256, the consumer looked up by digest in the directory and the
    digests compared with :func:`hmac.compare_digest`; the clear key is never stored. Unknown
    and wrong keys get the same 401. Several *different* keys in one request are refused.
    """

    name = "key_auth"
    scheme = "Key"
    # the key's digest is looked up in memory: nothing awaits
    sync_hooks = True
    # the compiled hooks copy the request when they edit it (``KeyAuthHooks.request``); a
    # subclass runs the base class's in-place flow, on a copy made before the hooks
    copies_on_edit: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.copies_on_edit = False

    Config: ClassVar[type[PluginConfig]] = KeyAuthConfig

    def __init__(self, config: KeyAuthConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        #: the per-request work, compiled (pipeline/runner.py ``SyncHooks``); the methods
        #: below delegate to it, so both paths share its cache of accepted keys
        self._hooks = KeyAuthHooks(
            frozenset(h.lower().encode("latin-1") for h in config.headers),
            list(config.query_params),
            config.max_key_bytes,
            self._challenges,
            self.name,
            self._anonymous,
            config.hide_credentials,
            self._resolve,
        )
        # a subclass may change the flow the hooks reproduce: it keeps the coroutine hooks
        self.fast_hooks = self._hooks if type(self) is KeyAuthPlugin else None

    sync_authenticate = True

    async def authenticate(self, ctx: RequestContext) -> Consumer:
        return self.authenticate_now(ctx)

    def authenticate_now(self, ctx: RequestContext) -> Consumer:
        return self._hooks.authenticate(ctx)[0]

    def _resolve(self, digest: str) -> tuple[Consumer, list[tuple[bytes, bytes]]]:
        """An accepted key's consumer (one frozen object per credential, serving every
        request) and its fields; a digest no credential has is refused."""
        hit = self.env.consumers.by_credential("key_auth", digest)
        if hit is None:
            raise unauthorized(self._challenges, self.name)
        consumer, entry = hit
        if not isinstance(entry, KeyEntry) or not digests_equal(entry.digest, digest):
            raise unauthorized(self._challenges, self.name)
        found = Consumer(
            id=consumer.id,
            username=consumer.username,
            groups=consumer.groups,
            credential=entry.credential,
        )
        return found, consumer_pairs(found)

    def identity_pairs(self, consumer: Consumer) -> list[tuple[bytes, bytes]] | None:
        return self._hooks.pairs.get(id(consumer))

    def hide(self, ctx: RequestContext) -> None:
        self._hooks.hide_key(ctx)

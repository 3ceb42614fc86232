"""The ``key_auth`` plugin."""

from __future__ import annotations

from typing import ClassVar

from portway.pipeline.context import Consumer, RequestContext
from portway.pipeline.plugin import PluginConfig, PluginEnv
from portway.plugins._identity.base import IdentityPlugin
from portway.plugins._identity.credentials import KeyEntry
from portway.plugins._identity.errors import missing, unauthorized
from portway.plugins._identity.hashing import digests_equal, sha256_hex
from portway.plugins._identity.tokens import query_values, remove_query_params
from portway.plugins.key_auth.config import KeyAuthConfig


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
    Config: ClassVar[type[PluginConfig]] = KeyAuthConfig

    def __init__(self, config: KeyAuthConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._headers = [h.lower() for h in config.headers]
        self._params = set(config.query_params)

    def _find_keys(self, ctx: RequestContext) -> list[str]:
        req = ctx.request
        found = [v for h in self._headers for v in req.headers.get_all(h)]
        if self._params and req.query:
            for p in self.config.query_params:
                found.extend(query_values(req.query, p))
        return found

    async def authenticate(self, ctx: RequestContext) -> Consumer:
        keys = {k.strip() for k in self._find_keys(ctx)}
        keys.discard("")
        if not keys:
            raise missing(self._challenges, self.name)
        if len(keys) > 1:
            raise unauthorized(self._challenges, self.name)
        key = keys.pop()
        if len(key) > self.config.max_key_bytes:
            raise unauthorized(self._challenges, self.name)
        digest = sha256_hex(key)
        hit = self.env.consumers.by_credential("key_auth", digest)
        if hit is None:
            raise unauthorized(self._challenges, self.name)
        consumer, entry = hit
        if not isinstance(entry, KeyEntry) or not digests_equal(entry.digest, digest):
            raise unauthorized(self._challenges, self.name)
        return Consumer(
            id=consumer.id,
            username=consumer.username,
            groups=consumer.groups,
            credential=entry.credential,
        )

    def hide(self, ctx: RequestContext) -> None:
        up = ctx.upstream_request
        up.headers.remove_many(h.encode("latin-1") for h in self._headers)
        if self._params and up.query:
            up.query = remove_query_params(up.query, self._params)

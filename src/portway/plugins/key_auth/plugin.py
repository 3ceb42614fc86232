"""The ``key_auth`` plugin."""

from __future__ import annotations

from typing import ClassVar

from portway.pipeline.context import Consumer, RequestContext
from portway.pipeline.plugin import PluginConfig, PluginEnv
from portway.plugins._identity.base import IdentityPlugin
from portway.plugins._identity.credentials import KeyEntry
from portway.plugins._identity.errors import missing, unauthorized
from portway.plugins._identity.hashing import digests_equal, sha256_hex
from portway.plugins._identity.headers import consumer_pairs
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
        self._names = frozenset(h.lower().encode("latin-1") for h in config.headers)
        self._params = set(config.query_params)
        self._max = config.max_key_bytes
        # digest of an accepted key -> its consumer and X-Consumer-* fields, built once per
        # credential (bounded by the configured keys: only accepted digests are kept; the
        # directory is fixed for this graph's lifetime)
        self._known: dict[str, tuple[Consumer, list[tuple[bytes, bytes]]]] = {}
        self._pairs: dict[int, list[tuple[bytes, bytes]]] = {}

    def _find_key(self, ctx: RequestContext) -> str | None:
        """The one key the request carries (``None``: none); several different keys are
        refused."""
        req = ctx.request
        names = self._names
        key: str | None = None
        several = False
        for k, v in req.headers.raw():
            if k in names:
                s = v.decode("latin-1").strip()
                if not s:
                    continue
                if key is None:
                    key = s
                elif s != key:
                    several = True
        if self._params and req.query:
            for p in self.config.query_params:
                for q in query_values(req.query, p):
                    s = q.strip()
                    if not s:
                        continue
                    if key is None:
                        key = s
                    elif s != key:
                        several = True
        if several:
            raise unauthorized(self._challenges, self.name)
        return key

    sync_authenticate = True

    async def authenticate(self, ctx: RequestContext) -> Consumer:
        return self.authenticate_now(ctx)

    def authenticate_now(self, ctx: RequestContext) -> Consumer:
        key = self._find_key(ctx)
        if key is None:
            raise missing(self._challenges, self.name)
        if len(key) > self._max:
            raise unauthorized(self._challenges, self.name)
        digest = sha256_hex(key)
        known = self._known.get(digest)
        if known is not None:
            # found by the same dict lookup the directory makes: no new timing signal
            return known[0]
        hit = self.env.consumers.by_credential("key_auth", digest)
        if hit is None:
            raise unauthorized(self._challenges, self.name)
        consumer, entry = hit
        if not isinstance(entry, KeyEntry) or not digests_equal(entry.digest, digest):
            raise unauthorized(self._challenges, self.name)
        # Consumer is frozen: one object per credential serves every request
        found = Consumer(
            id=consumer.id,
            username=consumer.username,
            groups=consumer.groups,
            credential=entry.credential,
        )
        pairs = consumer_pairs(found)
        self._known[digest] = (found, pairs)
        self._pairs[id(found)] = pairs
        return found

    def identity_pairs(self, consumer: Consumer) -> list[tuple[bytes, bytes]] | None:
        return self._pairs.get(id(consumer))

    def hide(self, ctx: RequestContext) -> None:
        up = ctx.upstream_request
        names = self._names
        for k, _ in up.headers.raw():
            if k in names:
                up.headers.remove_many(names)
                break
        if self._params and up.query:
            up.query = remove_query_params(up.query, self._params)

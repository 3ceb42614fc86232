"""The per-request work of ``key_auth``, as :class:`SyncHooks` (compiled with mypyc, setup.py
``HOT_MODULES``).

The identity flow is :meth:`IdentityPlugin.on_request
<portway.plugins._identity.base.IdentityPlugin.on_request>`'s, step for step: strip the
client's identity fields, authenticate (an accepted key's digest maps to its consumer and its
``X-Consumer-*`` fields, built once per credential), fall back to the anonymous consumer when
no key was presented, hide the key, set the consumer and its fields. The plugin's own
``authenticate_now`` and ``identity_pairs`` use the same cache, so the task path and the
task-free path answer alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from portway.http.headers import Headers
from portway.http.models import Response
from portway.pipeline.context import Consumer, RequestContext
from portway.pipeline.runner import SyncHooks
from portway.plugins._identity.errors import MissingCredentialsError, missing, unauthorized
from portway.plugins._identity.headers import STANDARD, consumer_pairs, set_consumer_headers
from portway.plugins._identity.tokens import query_values, remove_query_params

Pairs = list[tuple[bytes, bytes]]
#: digest -> (consumer, its fields); raises ``UnauthorizedError`` for an unknown digest
Resolver = Callable[[str], tuple[Consumer, Pairs]]


class KeyAuthHooks(SyncHooks):
    """``key_auth``'s ``on_request`` (it has no ``on_response``)."""

    def __init__(
        self,
        names: frozenset[bytes],
        params: list[str],
        max_key: int,
        challenges: list[str],
        source: str,
        anonymous: Consumer | None,
        hide: bool,
        resolve: Resolver,
    ) -> None:
        self.names = names
        self.params = params
        self.param_set = set(params)
        self.max_key = max_key
        self.challenges = challenges
        self.source = source
        self.anonymous = anonymous
        self.hide = hide
        self.resolve = resolve
        # digest of an accepted key -> its consumer and X-Consumer-* fields (bounded by the
        # configured keys: only accepted digests are kept; the directory is fixed for this
        # graph's lifetime)
        self.known: dict[str, tuple[Consumer, Pairs]] = {}
        #: id of a consumer this binding returned -> its fields
        self.pairs: dict[int, Pairs] = {}

    def find_key(self, ctx: RequestContext) -> str | None:
        """The one key the request carries (``None``: none); several different keys are
        refused."""
        req = ctx.request
        names = self.names
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
        query = req.query
        if self.params and query:
            for p in self.params:
                for q in query_values(query, p):
                    s = q.strip()
                    if not s:
                        continue
                    if key is None:
                        key = s
                    elif s != key:
                        several = True
        if several:
            raise unauthorized(self.challenges, self.source)
        return key

    def authenticate(self, ctx: RequestContext) -> tuple[Consumer, Pairs]:
        """The consumer the request's key identifies, with its fields; raises
        ``MissingCredentialsError`` (no key) or ``UnauthorizedError`` (not accepted)."""
        key = self.find_key(ctx)
        if key is None:
            raise missing(self.challenges, self.source)
        if len(key) > self.max_key:
            raise unauthorized(self.challenges, self.source)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        known = self.known.get(digest)
        if known is not None:
            # found by the same dict lookup the directory makes: no new timing signal
            return known
        found = self.resolve(digest)
        self.known[digest] = found
        self.pairs[id(found[0])] = found[1]
        return found

    def request(self, ctx: RequestContext) -> Response | None:
        up = ctx.upstream_request
        headers = up.headers
        _strip(headers)
        current = ctx.consumer
        anonymous = self.anonymous
        if anonymous is not None and current is not None and not current.anonymous:
            # another method already authenticated the request: methods combine as "any of"
            set_consumer_headers(headers, current)
            return None
        pairs: Pairs | None = None
        try:
            consumer, pairs = self.authenticate(ctx)
        except MissingCredentialsError:
            if anonymous is None:
                raise
            consumer = current if current is not None else anonymous
            pairs = self.pairs.get(id(consumer))
        if self.hide:
            self.hide_key(ctx)
        ctx.consumer = consumer
        add = headers.add_raw
        # identity fields were stripped above and nothing since adds them
        for name, value in consumer_pairs(consumer) if pairs is None else pairs:
            add(name, value)
        return None

    def hide_key(self, ctx: RequestContext) -> None:
        """Remove the key from ``ctx.upstream_request``."""
        up = ctx.upstream_request
        names = self.names
        for k, _ in up.headers.raw():
            if k in names:
                up.headers.remove_many(names)
                break
        if self.param_set and up.query:
            up.query = remove_query_params(up.query, self.param_set)


def _strip(headers: Headers) -> None:
    # one scan; the list is rebuilt only when a client sent an identity field
    names = STANDARD
    for k, _ in headers.raw():
        if k in names:
            headers.remove_many(names)
            return

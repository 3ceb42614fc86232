"""The per-request work of ``key_auth``, as :class:`SyncHooks` (compiled with mypyc, setup.py
``HOT_MODULES``).

The identity flow is :meth:`IdentityPlugin.on_request
<portway.plugins._identity.base.IdentityPlugin.on_request>`'s, step for step: strip the
client's identity fields, authenticate (an accepted key's digest maps to its consumer and its
``X-Consumer-*`` fields, built once per credential), fall back to the anonymous consumer when
no key was presented, hide the key, set the consumer and its fields. The plugin's own
``authenticate_now`` and ``identity_pairs`` use the same cache, so the task path and the
task-free path answer alike.

A key seen before is recognised without SHA-256 (an OpenSSL digest per request was ~10k
instructions, a quarter of the ``key_auth`` + ``rate_limit`` chain's price): accepted keys
are remembered by two 64-bit keyed hashes of their text (the interpreter's SipHash, whose
key is secret per process unless ``PYTHONHASHSEED`` fixes it, once of the key and once of a
random per-binding salt followed by the key), never by the text itself. A key passes this
memo only when both hashes equal an accepted key's (a forgery must hit 128 bits it cannot
compute without the accepted key); any other key takes the digest and the directory, as
before. Refused keys are never remembered.
"""

from __future__ import annotations

import hashlib
import os
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
        #: the key's field names and the identity fields, for one lookup per field
        self.watch: frozenset[bytes] = names | STANDARD
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
        #: the memo's salt (see the module docstring), fresh per binding
        self.salt = os.urandom(16).hex()
        #: hash(key) of an accepted key -> (hash(salt + key), consumer, fields)
        self.seen: dict[int, tuple[int, Consumer, Pairs]] = {}

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
        h1 = hash(key)
        seen = self.seen.get(h1)
        if seen is not None and seen[0] == hash(self.salt + key):
            return seen[1], seen[2]
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        known = self.known.get(digest)
        if known is None:
            found = self.resolve(digest)
            self.known[digest] = found
            self.pairs[id(found[0])] = found[1]
        else:
            # found by the same dict lookup the directory makes: no new timing signal
            found = known
        # (a later accepted key with the same first hash takes the slot: both stay correct)
        self.seen[h1] = (hash(self.salt + key), found[0], found[1])
        return found

    def request(self, ctx: RequestContext) -> Response | None:
        req = ctx.request
        up = ctx.upstream_request
        # the plugin edits a copy (``copies_on_edit``): while ``up`` is still the client's
        # request, the copy is made below, its fields built in one pass
        shared = up is req
        headers = up.headers
        # one scan for both: client-sent identity fields (stripped now) and the key's
        # fields (hidden below, once the key was read from the client's request)
        # (one set lookup per field: the union; the two sets only on a hit, which is rare
        # for identity fields and once per request for the key)
        standard = STANDARD
        names = self.names
        watch = self.watch
        strip = False
        keyed = False
        for k, _ in headers.raw():
            if k in watch:
                if k in standard:
                    strip = True
                if k in names:
                    keyed = True
        if strip and not shared:
            headers.remove_many(standard)
        current = ctx.consumer
        anonymous = self.anonymous
        if anonymous is not None and current is not None and not current.anonymous:
            # another method already authenticated the request: methods combine as "any of"
            if shared:
                up = ctx.upstream_request = req.copy_for_upstream()
                if strip:
                    up.headers.remove_many(standard)
            set_consumer_headers(up.headers, current)
            return None
        pairs: Pairs | None = None
        try:
            consumer, pairs = self.authenticate(ctx)
        except MissingCredentialsError:
            if anonymous is None:
                raise
            consumer = current if current is not None else anonymous
            pairs = self.pairs.get(id(consumer))
        if pairs is None:
            pairs = consumer_pairs(consumer)
        hide = self.hide
        if shared:
            # the copy's fields: the client's without the identity fields and (hidden) the
            # key's, then the consumer's (the order the in-place edits below give)
            drop = (watch if strip else names) if hide and keyed else standard if strip else None
            raw = headers.raw()
            items = list(raw) if drop is None else [kv for kv in raw if kv[0] not in drop]
            items.extend(pairs)
            up = ctx.upstream_request = req.copy_for_upstream(Headers.adopt(items))
        else:
            if hide and keyed:
                headers.remove_many(names)
            # identity fields were stripped above and nothing since adds them; the pairs
            # are immutable tuples, shared by every request of the consumer
            headers.raw().extend(pairs)
        if hide and self.param_set and up.query:
            up.query = remove_query_params(up.query, self.param_set)
        ctx.consumer = consumer
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

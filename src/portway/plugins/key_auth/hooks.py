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
before. Refused keys are never remembered. The memo is keyed by the field's value as it
arrived (bytes: no decoding or stripping to recognise a key seen before); a request with
several key fields, or with query parameters to look at, takes the full reading.

The upstream request is not copied to edit it (while it is still the client's, shared): the
hook hands the edit — drop the identity fields (and the key's, hidden), add the consumer's
fields — to ``RequestContext.edit_upstream_fields``, and the head writer applies it while
writing the head it writes anyway (the consumer's fields as lines serialised once per
credential).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Final

from mypy_extensions import i64

from portway.http.forwarding import plain_lines
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


#: slots of the memo's table (a power of two): an accepted key sits at its first hash's low
#: bits; keys whose slot is taken by another go to a dict
_SLOTS: Final = 1024


class _Known:
    """An accepted key in the memo: its two hashes, the consumer, its fields and those
    fields serialised (``forwarding.plain_lines``: None when the writer must look). The
    hashes are native 64-bit integers (compiled: no boxed int compared or looked up)."""

    __slots__ = ("consumer", "h1", "h2", "lines", "pairs")

    def __init__(self, consumer: Consumer, pairs: Pairs, lines: bytes | None) -> None:
        self.h1: i64 = 0
        self.h2: i64 = 0
        self.consumer = consumer
        self.pairs = pairs
        self.lines = lines


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
        #: the one key field name (the usual config), compared as bytes: a set lookup hashes
        #: each fresh field name of the request, a comparison first looks at the lengths
        self.one: bytes | None = next(iter(names)) if len(names) == 1 else None
        #: the key's field names and the identity fields, for one lookup per field
        self.watch: frozenset[bytes] = names | STANDARD
        #: what a pending edit drops: the identity fields, and the key's when hidden (a
        #: name that is not there drops nothing, as ``remove_many`` does)
        self.drop: frozenset[bytes] = self.watch if hide else STANDARD
        self.params = params
        self.param_set = set(params)
        #: the parameter names as bytes, when a raw query without ``%`` can name one only by
        #: holding it verbatim (no space in any name: ``+`` decodes to one); else None
        self.raw_params: tuple[bytes, ...] | None = (
            None if any(" " in p for p in params) else tuple(p.encode() for p in params)
        )
        self.max_key = max_key
        self.challenges = challenges
        self.source = source
        self.anonymous = anonymous
        self.hide = hide
        self.resolve = resolve
        # digest of an accepted key -> its consumer and X-Consumer-* fields (bounded by the
        # configured keys: only accepted digests are kept; the directory is fixed for this
        # graph's lifetime)
        self.known: dict[str, tuple[Consumer, Pairs, bytes | None]] = {}
        #: id of a consumer this binding returned -> its fields
        self.pairs: dict[int, Pairs] = {}
        #: the memo's salt (see the module docstring), fresh per binding
        self.salt = os.urandom(16).hex().encode()
        #: accepted keys' :class:`_Known` by the low bits of hash(value) of their field
        #: (a list index and two native comparisons), and those whose slot another took,
        #: by hash(value)
        self.seen: list[_Known | None] = [None] * _SLOTS
        self.more: dict[int, _Known] = {}

    def _query_may_hold(self, query: bytes) -> bool:
        """False only when no parameter of ``query`` is named as a key parameter
        (percent-decoded, ``+`` as a space, as ``query_values`` reads them); a cheap
        necessary test, so a query without the key (``?id=7``) keeps the memo and the
        request uncopied."""
        raw = self.raw_params
        if raw is None or 37 in query:  # (37: "%")
            return True
        for p in raw:  # noqa: SIM110 (a loop compiles to no generator object)
            if p in query:
                return True
        return False

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
        k = self._known(ctx)
        return k.consumer, k.pairs

    def _known(self, ctx: RequestContext) -> _Known:
        """:meth:`authenticate`'s answer, as the memo keeps it."""
        req = ctx.request
        names = self.names
        # the usual request: one key field, no query parameter to read
        value: bytes | None = None
        query = req.query
        single = not (self.params and query and self._query_may_hold(query))
        one = self.one
        if one is not None:
            for kv in req.headers.raw():
                if kv[0] == one:
                    if value is None:
                        value = kv[1]
                    else:
                        single = False
        else:
            for kv in req.headers.raw():
                if kv[0] in names:
                    if value is None:
                        value = kv[1]
                    else:
                        single = False
        h1: i64 = 0
        if value is not None and single:
            h1 = hash(value)
            seen = self.seen[h1 & (_SLOTS - 1)]
            if (seen is None or seen.h1 != h1) and self.more:
                seen = self.more.get(h1)
            if seen is not None and seen.h1 == h1 and seen.h2 == hash(self.salt + value):
                return seen
        key = self.find_key(ctx)
        if key is None:
            raise missing(self.challenges, self.source)
        if len(key) > self.max_key:
            raise unauthorized(self.challenges, self.source)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        known = self.known.get(digest)
        if known is None:
            consumer, pairs = self.resolve(digest)
            known = self.known[digest] = (consumer, pairs, plain_lines(pairs))
            self.pairs[id(consumer)] = pairs
        # (else found by the same dict lookup the directory makes: no new timing signal)
        out = _Known(known[0], known[1], known[2])
        if value is not None and single:
            # (a later accepted key with the same first hash takes its place: both stay
            # correct)
            out.h1 = h1
            out.h2 = hash(self.salt + value)
            i = h1 & (_SLOTS - 1)
            cur = self.seen[i]
            if cur is None or cur.h1 == h1:
                self.seen[i] = out
            else:
                self.more[h1] = out
        return out

    def request(self, ctx: RequestContext) -> Response | None:
        req = ctx.request
        # the plugin edits a copy (``copies_on_edit``): while the upstream request is still
        # the client's, the edit is handed to the context (``edit_upstream_fields``), applied
        # by the head writer (or by a copy, when something reads the request first)
        shared = ctx.upstream_unedited is req
        current = ctx.consumer
        anonymous = self.anonymous
        if anonymous is not None and current is not None and not current.anonymous:
            # another method already authenticated the request: methods combine as "any of"
            up = ctx.upstream_request
            if up is req:
                up = ctx.upstream_request = req.copy_for_upstream()
            set_consumer_headers(up.headers, current)
            return None
        lines: bytes | None = None
        try:
            k = self._known(ctx)
            consumer = k.consumer
            pairs: Pairs | None = k.pairs
            lines = k.lines
        except MissingCredentialsError:
            if anonymous is None:
                raise
            consumer = current if current is not None else anonymous
            pairs = self.pairs.get(id(consumer))
        if pairs is None:
            pairs = consumer_pairs(consumer)
        hide = self.hide
        query_edit = hide and bool(self.param_set)
        query = req.query
        if shared and not (query_edit and query and self._query_may_hold(query)):
            # no copy: the identity fields (and the key's, hidden) go, the consumer's come
            # (what the in-place edits below give, in the same order)
            ctx.edit_upstream_fields(self.drop, pairs, lines)
        else:
            up = ctx.upstream_request
            if up is req:
                # the copy's fields built in one pass: the client's without the identity
                # fields and (hidden) the key's, then the consumer's
                drop = self.drop
                items = [kv for kv in req.headers.raw() if kv[0] not in drop]
                items.extend(pairs)
                up = ctx.upstream_request = req.copy_for_upstream(Headers.adopt(items))
            else:
                headers = up.headers
                # one scan for both: client-sent identity fields and the key's fields
                drop = self.drop
                for kk, _ in headers.raw():
                    if kk in drop:
                        headers.remove_many(drop)
                        break
                # the pairs are immutable tuples, shared by every request of the consumer
                headers.raw().extend(pairs)
            if query_edit and up.query:
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

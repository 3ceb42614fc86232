"""Verified tokens, kept so a token seen again costs a dict lookup, not a signature check.

As Kong and Envoy (``jwt_cache_config``) do: a token whose signature and claims passed is
kept, keyed by its exact text, with the consumer built from it. On every later request the
time rules of :func:`~portway.plugins.jwt.token.check_claims` are applied again with the
same expressions (``exp``, ``nbf``, ``iat`` and ``max_age``, with the leeway), and a token
verified with a JWKS key is kept only while that JWKS holds the keys it had then (its
``version``): a rotation re-verifies every token once. Everything else a verification checks
(header rules, issuer, signature, required claims, audience, the consumer) depends on the
token's text and the graph's configuration only, and each graph builds its own plugins, so a
reload starts from an empty cache. Failures are never kept.

Bounded: at most :data:`MAX_ENTRIES` tokens of at most :data:`MAX_TOKEN_CHARS` characters
each (longer ones are verified every time); when full, the oldest entry goes (FIFO).
"""

from __future__ import annotations

from typing import Any, Final

from portway.pipeline.context import Consumer

#: tokens kept per plugin binding
MAX_ENTRIES: Final = 4096
#: longer tokens are not kept (bounds the cache's memory to a few MB)
MAX_TOKEN_CHARS: Final = 2048


class Verified:
    """One verified token: its consumer and the time claims to check again."""

    __slots__ = ("consumer", "exp", "iat", "keys", "nbf", "pairs", "version")

    def __init__(
        self,
        consumer: Consumer,
        pairs: list[tuple[bytes, bytes]],
        exp: float | None,
        nbf: float | None,
        iat: float | None,
        keys: Any,
        version: int,
    ) -> None:
        self.consumer = consumer
        #: the consumer's ``X-Consumer-*`` fields, built once
        self.pairs = pairs
        self.exp = exp
        self.nbf = nbf
        self.iat = iat
        #: the JWKS (``RotatingKeys``) the verifying key came from, or None (static keys)
        self.keys = keys
        self.version = version


class TokenCache:
    """Token text -> :class:`Verified`, for one plugin binding."""

    def __init__(self, leeway: float, max_age: float | None) -> None:
        self.leeway = leeway
        self.max_age = max_age
        self._d: dict[str, Verified] = {}
        #: id of a kept consumer -> its entry (the entry holds the consumer: no id reuse)
        self._of: dict[int, Verified] = {}

    def __len__(self) -> int:
        return len(self._d)

    def get(self, token: str, now: float) -> Consumer | None:
        """The consumer of ``token`` if it was verified and is still valid at ``now``
        (an entry no longer valid is dropped: the full verification decides and explains)."""
        v = self._d.get(token)
        if v is None:
            return None
        leeway = self.leeway
        # the same comparisons as check_claims, in the same float arithmetic
        exp, nbf, iat = v.exp, v.nbf, v.iat
        ok = (
            (exp is None or not now >= exp + leeway)
            and (nbf is None or not now + leeway < nbf)
            and (
                (
                    not now + leeway < iat
                    and (self.max_age is None or not now - iat > self.max_age + leeway)
                )
                if iat is not None
                else self.max_age is None
            )
            and (v.keys is None or v.keys.version == v.version)
        )
        if not ok:
            self._drop(token)
            return None
        return v.consumer

    def pairs(self, consumer: Consumer) -> list[tuple[bytes, bytes]] | None:
        """The fields of a consumer :meth:`get` returned (``None`` for any other)."""
        v = self._of.get(id(consumer))
        return v.pairs if v is not None else None

    def _drop(self, token: str) -> None:
        v = self._d.pop(token)
        if self._of.get(id(v.consumer)) is v:
            del self._of[id(v.consumer)]

    def put(
        self,
        token: str,
        claims: dict[str, Any],
        consumer: Consumer,
        pairs: list[tuple[bytes, bytes]],
        keys: Any,
    ) -> None:
        """Keep a token that passed every check; ``keys`` is the JWKS its key came from."""
        if len(token) > MAX_TOKEN_CHARS:
            return
        d = self._d
        if token in d:
            self._drop(token)
        elif len(d) >= MAX_ENTRIES:
            self._drop(next(iter(d)))
        v = d[token] = Verified(
            consumer,
            pairs,
            _num(claims.get("exp")),
            _num(claims.get("nbf")),
            _num(claims.get("iat")),
            keys,
            keys.version if keys is not None else 0,
        )
        self._of[id(consumer)] = v


def _num(v: Any) -> float | None:
    # check_claims accepted the token: a time claim is absent, null-free and numeric
    return None if v is None else float(v)

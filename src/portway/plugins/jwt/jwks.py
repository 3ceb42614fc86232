"""A cached JSON Web Key Set (RFC 7517) fetched from an issuer's ``jwks_uri``.

:class:`RotatingKeys` holds the fetching and rotation rules and is generic in the key type (the
``oidc`` plugin keeps ``joserfc`` keys in it); :class:`JwksCache` holds this package's
:class:`~portway.plugins._identity.jose.JwsKey`. Keys are refreshed on a schedule and when a
token names an unknown ``kid`` (key rotation), but fetches triggered by unknown kids are rate-
limited to one per ``min_refresh`` seconds and concurrent triggers share one fetch, so random
kids cannot turn the gateway into a request amplifier. A failed fetch keeps the last good key
set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

import orjson

from portway.plugins._identity.fetch import FetchResponse, http_request
from portway.plugins._identity.jose import JoseKeyError, JwsKey, jwk_key
from portway.tasks import stop_tasks

log = logging.getLogger("portway.plugins.jwt")

Fetch = Callable[..., Awaitable[FetchResponse]]
MAX_KEYS = 100


def parse_jwks(body: bytes, allowed: frozenset[str]) -> list[JwsKey]:
    """Usable signature keys of a JWKS document; ``ValueError`` if it is not one."""
    doc: Any = orjson.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: list[JwsKey] = []
    for jwk in doc["keys"][:MAX_KEYS]:
        if not isinstance(jwk, dict):
            continue
        try:
            k = jwk_key(jwk, allowed)
        except JoseKeyError as e:
            log.debug("skipping JWK %r: %s", jwk.get("kid"), e)
            continue
        if k.algorithms:
            keys.append(k)
    return keys


class _HasKid(Protocol):
    @property
    def kid(self) -> str | None: ...


K = TypeVar("K", bound=_HasKid)


class RotatingKeys(Generic[K]):
    """Keys of one JWKS URL. ``start()`` fetches once and schedules refreshes.

    Subclasses implement :meth:`parse` (a JWKS body → its usable keys; ``ValueError`` when it
    is not one)."""

    def __init__(
        self,
        url: str,
        *,
        refresh: float = 300.0,
        min_refresh: float = 10.0,
        timeout: float = 3.0,
        fetch: Fetch = http_request,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._refresh_every = refresh
        self._min_refresh = min_refresh
        self._timeout = timeout
        self._fetch = fetch
        self._clock = clock
        self._by_kid: dict[str, list[K]] = {}
        self._no_kid: list[K] = []
        self._last_attempt: float | None = None
        #: last fetch triggered by an unknown kid; scheduled refreshes do not count, so a key
        #: rotated in just after a scheduled fetch is still picked up at once
        self._last_on_demand: float | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        #: completed fetch attempts (successful or not); for metrics and tests
        self.fetches = 0
        self.loaded = False
        #: bumped whenever the key set changes (a fetch that returns other bytes): what was
        #: verified with an older version is verified again (``jwt/cache.py``)
        self.version = 0
        self._body: bytes | None = None

    async def start(self) -> None:
        await self.refresh()
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"jwks:{self.url}")

    async def aclose(self) -> None:
        await stop_tasks(self._task, self._inflight)
        self._task = None

    async def _loop(self) -> None:
        while True:
            wait = self._refresh_every if self.loaded else min(self._refresh_every, 5.0)
            await asyncio.sleep(wait)
            await self.refresh()

    def _lookup(self, kid: str | None) -> list[K]:
        if kid is None:
            return [k for ks in self._by_kid.values() for k in ks] + self._no_kid
        return self._by_kid.get(kid, []) + self._no_kid

    async def keys_for(self, kid: str | None) -> list[K]:
        """Keys that may have signed a token with ``kid`` (refreshing once, rate-limited, when
        the kid is unknown)."""
        if kid is not None and kid in self._by_kid:
            return self._by_kid[kid] + self._no_kid
        if kid is None and (self._by_kid or self._no_kid):
            return self._lookup(None)
        last = self._last_on_demand
        now = self._clock()
        if self._inflight is not None or last is None or now - last >= self._min_refresh:
            if self._inflight is None:
                self._last_on_demand = now
            await self.refresh()
        return self._lookup(kid)

    async def refresh(self) -> bool:
        """Fetch now (joining a fetch already in flight); ``True`` when keys were replaced."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._do_refresh())
        task = self._inflight
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._inflight is task:
                self._inflight = None

    def parse(self, body: bytes) -> list[K]:
        raise NotImplementedError

    async def _do_refresh(self) -> bool:
        self._last_attempt = self._clock()
        try:
            r = await self._fetch(
                "GET", self.url, headers=[("accept", "application/json")], timeout=self._timeout
            )
            if r.status != 200:
                raise ValueError(f"HTTP {r.status}")
            keys = self.parse(r.body)
            if not keys:
                raise ValueError("no usable keys")
        except Exception as e:  # any failure keeps the last good keys
            log.warning("JWKS fetch from %s failed (keeping the last good keys): %s", self.url, e)
            return False
        finally:
            self.fetches += 1
        if r.body == self._body:
            return True  # the same document: the same keys (and the same version)
        by_kid: dict[str, list[K]] = {}
        no_kid: list[K] = []
        for k in keys:
            if k.kid is None:
                no_kid.append(k)
            else:
                by_kid.setdefault(k.kid, []).append(k)
        self._by_kid, self._no_kid = by_kid, no_kid
        self._body = r.body
        self.version += 1
        self.loaded = True
        return True


class JwksCache(RotatingKeys[JwsKey]):
    """:class:`RotatingKeys` of :class:`JwsKey`, each bound to algorithms in ``allowed``."""

    def __init__(self, url: str, *, allowed: frozenset[str], **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._allowed = allowed

    def parse(self, body: bytes) -> list[JwsKey]:
        return parse_jwks(body, self._allowed)

"""Login sessions and where they are kept.

A :class:`Session` holds the user's tokens and claims. The cookie store seals the whole
session into the browser's cookie (AES-GCM, chunked); the Redis store seals it into Redis
under a random 256-bit id and the cookie carries only the sealed id, so deleting the key
revokes the session everywhere (logout). Both check the idle and absolute timeouts on load
(the plugin does, through :meth:`Session.expired`) and a new id is minted at every login, so
a session id planted before login is never the one used after it (no fixation).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from portway.plugins.oidc.config import SessionOptions
from portway.plugins.oidc.cookies import clear_chunked, read_chunked, write_chunked
from portway.plugins.oidc.seal import Sealer, b64url
from portway.state.base import StoreUnavailableError
from portway.state.redis import RedisStore


def new_id() -> str:
    return b64url(os.urandom(32))


@dataclass(slots=True)
class Session:
    sid: str
    sub: str
    claims: dict[str, Any]
    created: float
    seen: float
    access_token: str
    #: access token expiry (epoch seconds), from expires_in or the token's exp
    expires_at: float | None = None
    refresh_token: str | None = None
    id_token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def expired(self, now: float, opts: SessionOptions) -> bool:
        return now - self.seen > opts.idle_timeout or now - self.created > opts.absolute_timeout

    def ttl(self, now: float, opts: SessionOptions) -> float:
        """Seconds until the session ends if unused."""
        return max(
            0.0,
            min(self.seen + opts.idle_timeout, self.created + opts.absolute_timeout) - now,
        )

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, data: bytes) -> Session | None:
        try:
            d: Any = orjson.loads(data)
            s = cls(**d)
        except (orjson.JSONDecodeError, TypeError):
            return None
        if not isinstance(s.sid, str) or not isinstance(s.claims, dict):
            return None
        return s


class SessionStoreError(Exception):
    """The session store could not be reached (503)."""


class CookieSessions:
    """Sessions sealed into the browser's (chunked) cookie."""

    def __init__(self, opts: SessionOptions, sealer: Sealer) -> None:
        self.opts = opts
        self._sealer = sealer
        self.name = opts.cookie.name
        self._purpose = "session:" + self.name

    async def load(self, cookies: dict[str, str]) -> tuple[Session | None, int]:
        """The session the request carries (``None`` when absent or unreadable) and how many
        of its cookies the request carried."""
        value, present = read_chunked(cookies, self.name)
        if value is None:
            return None, present
        data = self._sealer.open(value, self._purpose)
        return (Session.loads(data) if data is not None else None), present

    async def save(self, session: Session, now: float, present: int) -> list[str]:
        value = self._sealer.seal(session.dumps(), self._purpose)
        max_age = int(session.created + self.opts.absolute_timeout - now)
        return write_chunked(self.name, value, self.opts.cookie, max(1, max_age), present)

    async def delete(self, session: Session | None, present: int) -> list[str]:
        return clear_chunked(self.name, self.opts.cookie, present)

    async def revoke(self, session: Session) -> None:
        """End ``session`` in the store (its cookie is replaced by the caller)."""


class RedisSessions(CookieSessions):
    """Sessions kept (sealed) in Redis; the cookie holds the sealed session id."""

    def __init__(self, opts: SessionOptions, sealer: Sealer, store: RedisStore, prefix: str):
        super().__init__(opts, sealer)
        self._store = store
        self._prefix = prefix

    def _key(self, sid: str) -> str:
        return f"{self._prefix}{sid}"

    async def load(self, cookies: dict[str, str]) -> tuple[Session | None, int]:
        value, present = read_chunked(cookies, self.name)
        if value is None:
            return None, present
        raw = self._sealer.open(value, "session-id:" + self.name)
        if raw is None:
            return None, present
        return await self.load_id(raw.decode("ascii", "replace")), present

    async def load_id(self, sid: str) -> Session | None:
        """The stored session ``sid``; ``None`` once it ended (logout, timeout)."""
        try:
            stored = await self._store.get(self._key(sid))
        except StoreUnavailableError as e:
            raise SessionStoreError("session store unavailable") from e
        if stored is None:
            return None
        data = self._sealer.open(stored.decode("ascii", "replace"), "session-data:" + sid)
        s = Session.loads(data) if data is not None else None
        return s if s is not None and s.sid == sid else None

    async def save(self, session: Session, now: float, present: int) -> list[str]:
        sealed = self._sealer.seal(session.dumps(), "session-data:" + session.sid)
        try:
            await self._store.set(
                self._key(session.sid),
                sealed.encode("ascii"),
                max(1.0, session.ttl(now, self.opts)),
            )
        except StoreUnavailableError as e:
            raise SessionStoreError("session store unavailable") from e
        value = self._sealer.seal(session.sid.encode("ascii"), "session-id:" + self.name)
        max_age = int(session.created + self.opts.absolute_timeout - now)
        return write_chunked(self.name, value, self.opts.cookie, max(1, max_age), present)

    async def delete(self, session: Session | None, present: int) -> list[str]:
        if session is not None:
            await self.revoke(session)
        return clear_chunked(self.name, self.opts.cookie, present)

    async def revoke(self, session: Session) -> None:
        try:
            await self._store.delete(self._key(session.sid))
        except StoreUnavailableError as e:
            raise SessionStoreError("session store unavailable") from e

"""Refreshing a session's tokens at the token endpoint, once per refresh token.

Requests of one session arriving together share one refresh grant (a future per refresh
token), and the outcome is kept for :data:`REUSE_FOR` seconds, so requests still carrying
the pre-refresh cookie get the refreshed session instead of spending the (often single-use,
rotated) refresh token again. The scope is one process: see docs/architecture.md for what
happens across workers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from portway.plugins._identity.cache import TtlLru
from portway.plugins.oidc.login import state_digest
from portway.plugins.oidc.provider import GrantRejected, Provider, ProviderUnavailable
from portway.plugins.oidc.sessions import CookieSessions, RedisSessions, Session, SessionStoreError
from portway.plugins.oidc.tokens import InvalidToken

log = logging.getLogger("portway.plugins.oidc")

#: how long the outcome of a refresh is reused for requests still carrying the old cookie
REUSE_FOR = 120.0

CheckIdToken = Callable[[str, str | None, float], Awaitable[dict[str, Any]]]


def expiry(data: dict[str, Any], now: float) -> float | None:
    """When the access token of a token response expires (from ``expires_in``)."""
    v = data.get("expires_in")
    if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
        return now + float(v)
    return None


class Refresher:
    """``await refreshed(session)``: the session with new tokens, ``None`` when the provider
    ended the grant (the session is over), or a ``ProviderError`` when it could not answer."""

    def __init__(
        self,
        provider: Provider,
        sessions: CookieSessions,
        check_id_token: CheckIdToken,
        clock: Callable[[], float],
    ) -> None:
        self._provider = provider
        self._sessions = sessions
        self._check_id_token = check_id_token
        self._clock = clock
        self._inflight: dict[str, asyncio.Future[Session | None]] = {}
        self._recent: TtlLru[str, tuple[Session | None]] = TtlLru(10_000)
        #: refresh grants sent; for tests and metrics
        self.refreshes = 0

    async def refreshed(self, session: Session) -> Session | None:
        assert session.refresh_token is not None
        key = state_digest(session.refresh_token)
        hit = self._recent.get(key)
        if hit is not None:
            return hit[0]
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            new = await self._refresh(session)
        except BaseException as e:
            fut.set_exception(e if isinstance(e, Exception) else ProviderUnavailable("cancelled"))
            fut.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            fut.set_result(new)
            self._recent.put(key, (new,), REUSE_FOR)
            return new
        finally:
            del self._inflight[key]

    async def _refresh(self, session: Session) -> Session | None:
        assert session.refresh_token is not None
        self.refreshes += 1
        try:
            data = await self._provider.token_request(
                {"grant_type": "refresh_token", "refresh_token": session.refresh_token}
            )
        except GrantRejected as e:
            log.info("refresh refused by the provider (%s): session ended", e.error)
            if isinstance(self._sessions, RedisSessions):
                # another instance may have refreshed first (rotating refresh tokens)
                try:
                    latest = await self._sessions.load_id(session.sid)
                except SessionStoreError:
                    latest = None
                if latest is not None and latest.refresh_token != session.refresh_token:
                    return latest
            return None
        now = self._clock()
        claims = session.claims
        id_token = session.id_token
        new_id_token = data.get("id_token")
        if isinstance(new_id_token, str):
            # OpenID Connect Core §12.2: validated as at login, without a nonce, same subject
            try:
                claims = await self._check_id_token(new_id_token, None, now)
            except InvalidToken as e:
                log.warning("refreshed ID token refused (%s): session ended", e.detail)
                return None
            if claims.get("sub") != session.sub:
                log.warning("refreshed ID token names another subject: session ended")
                return None
            id_token = new_id_token
        rt = data.get("refresh_token")
        return Session(
            sid=session.sid,
            sub=session.sub,
            claims=claims,
            created=session.created,
            seen=now,
            access_token=data["access_token"],
            expires_at=expiry(data, now),
            refresh_token=rt if isinstance(rt, str) else session.refresh_token,
            id_token=id_token,
            extra={"scope": data.get("scope", session.extra.get("scope"))},
        )

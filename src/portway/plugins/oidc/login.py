"""Starting a login: ``state``, ``nonce``, PKCE, and the return path, kept in a sealed cookie.

Each started login is a :class:`PendingLogin` in the login cookie (``<session cookie>_login``,
AES-GCM sealed, ``SameSite=Lax`` so it comes back on the provider's redirect, at most
:data:`MAX_PENDING` logins from several tabs, each valid ``login_timeout``). The callback
finds its entry by ``state`` and removes it; the plugin also remembers consumed states until
they would have expired, so a replayed callback URL fails even with an old copy of the cookie.

The return path is taken from the request that needed a login, re-checked by
:func:`safe_return` when stored and when used: only a same-origin absolute path survives
(``//host``, ``/\\host``, schemes and control characters fall back to ``/``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from portway.plugins.oidc.config import OidcConfig
from portway.plugins.oidc.cookies import clear_cookie, set_cookie
from portway.plugins.oidc.seal import Sealer, b64url

MAX_PENDING = 5
MAX_RETURN = 2048


def safe_return(target: str | None) -> str:
    """``target`` if it is a same-origin path (with optional query), else ``"/"``."""
    if not target or len(target) > MAX_RETURN:
        return "/"
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(c < " " or c == "\x7f" for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def s256(verifier: str) -> str:
    """The S256 ``code_challenge`` of a PKCE ``code_verifier`` (RFC 7636 §4.2)."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def state_digest(state: str) -> str:
    """What is remembered of a consumed state (never the state itself)."""
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class PendingLogin:
    state: str
    nonce: str
    verifier: str | None
    return_to: str
    created: float


class LoginCookie:
    """Reads and writes the sealed list of pending logins."""

    def __init__(self, config: OidcConfig, sealer: Sealer) -> None:
        self._cfg = config
        self._sealer = sealer
        self.name = config.session.cookie.name + "_login"
        same = config.session.cookie.same_site
        # the provider's redirect back is a cross-site top-level GET: Lax is the strictest
        # setting under which the browser sends this cookie with it
        self._same_site = "none" if same == "none" else "lax"

    def read(self, cookies: dict[str, str], now: float) -> list[PendingLogin]:
        value = cookies.get(self.name)
        if not value:
            return []
        data = self._sealer.open(value, "login:" + self.name)
        if data is None:
            return []
        try:
            items: Any = orjson.loads(data)
            pending = [PendingLogin(*item) for item in items]
        except (orjson.JSONDecodeError, TypeError):
            return []
        return [p for p in pending if now - p.created <= self._cfg.login_timeout]

    def write(self, pending: list[PendingLogin]) -> str:
        opts = self._cfg.session.cookie
        if not pending:
            return clear_cookie(self.name, opts)
        items = [
            [p.state, p.nonce, p.verifier, p.return_to, p.created] for p in pending[-MAX_PENDING:]
        ]
        value = self._sealer.seal(orjson.dumps(items), "login:" + self.name)
        return set_cookie(
            self.name, value, opts, int(self._cfg.login_timeout), same_site=self._same_site
        )

    @staticmethod
    def find(pending: list[PendingLogin], state: str) -> PendingLogin | None:
        for p in pending:
            if hmac.compare_digest(p.state.encode(), state.encode()):
                return p
        return None


def new_login(config: OidcConfig, return_to: str, now: float) -> PendingLogin:
    # RFC 7636 §4.1: 32 random octets, base64url → a 43-character verifier
    verifier = b64url(os.urandom(32)) if config.pkce else None
    return PendingLogin(b64url(os.urandom(24)), b64url(os.urandom(24)), verifier, return_to, now)


def authorization_url(
    config: OidcConfig, endpoint: str, redirect_uri: str, login: PendingLogin
) -> str:
    params = {
        "response_type": "code",
        "client_id": config.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(config.scopes),
        "state": login.state,
        "nonce": login.nonce,
    }
    if login.verifier is not None:
        params["code_challenge"] = s256(login.verifier)
        params["code_challenge_method"] = "S256"
    sep = "&" if urlsplit(endpoint).query else "?"
    return endpoint + sep + urlencode(params)

"""Configuration of the ``oidc`` plugin (OpenID Connect login and sessions)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from portway.config.types import Duration
from portway.pipeline.plugin import PluginConfig
from portway.plugins._identity.base import IdentityConfig
from portway.plugins._ratelimit.config import RedisOptions

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: cookie-name characters (RFC 6265 token) minus "." which separates chunk numbers
_COOKIE = re.compile(r"^[!#$%&'*+^_`|~0-9A-Za-z-]+$")
MIN_SECRET_BYTES = 32
#: asymmetric JWS algorithms accepted for ID and access tokens (keys come from the JWKS;
#: HS* would need the client secret as a key and is refused)
SIGNING_ALGS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "Ed25519",
)


def _path(v: str, what: str) -> str:
    if not v.startswith("/") or v.startswith("//") or "\\" in v or "?" in v or "#" in v:
        raise ValueError(f"{what} must be an absolute path such as /oauth2/callback")
    return v


class CookieOptions(PluginConfig):
    name: str = Field("pw_session", description="session cookie name (chunks: NAME.1, NAME.2 …)")
    same_site: Literal["lax", "strict", "none"] = Field("lax", description="SameSite attribute")
    secure: bool = Field(True, description="Secure attribute (HTTPS only); keep true outside tests")
    domain: str | None = Field(None, description="Domain attribute; default: host-only cookie")
    path: str = Field("/", description="Path attribute")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _COOKIE.match(v):
            raise ValueError(f"{v!r} is not a valid cookie name (no '.', ';', '=' or spaces)")
        return v

    @model_validator(mode="after")
    def _none_needs_secure(self) -> CookieOptions:
        if self.same_site == "none" and not self.secure:
            raise ValueError("same_site: none requires secure: true (browsers drop the cookie)")
        return self


class SessionOptions(PluginConfig):
    store: Literal["cookie", "redis"] = Field(
        "cookie", description="cookie: encrypted and chunked in the browser; redis: server-side"
    )
    secret: str | None = Field(None, description="encryption secret, at least 32 bytes")
    secrets: list[str] | None = Field(
        None,
        min_length=1,
        description="rotation: [new, old, …]; new sessions use the first, any may open one",
    )
    cookie: CookieOptions = Field(default_factory=lambda: CookieOptions())
    idle_timeout: Duration = Field(1800.0, gt=0, description="ends a session unused this long")
    absolute_timeout: Duration = Field(43200.0, gt=0, description="ends a session this old")
    redis: RedisOptions = Field(
        default_factory=lambda: RedisOptions(), description="for store: redis"
    )

    @model_validator(mode="after")
    def _secrets(self) -> SessionOptions:
        if (self.secret is None) == (self.secrets is None):
            raise ValueError("give exactly one of secret or secrets")
        for s in self.all_secrets:
            if len(s.encode("utf-8")) < MIN_SECRET_BYTES:
                raise ValueError(f"session secrets must be at least {MIN_SECRET_BYTES} bytes")
        if self.idle_timeout > self.absolute_timeout:
            raise ValueError("idle_timeout must not exceed absolute_timeout")
        return self

    @property
    def all_secrets(self) -> list[str]:
        return [self.secret] if self.secret is not None else list(self.secrets or [])


class LogoutOptions(PluginConfig):
    path: str = Field("/logout", description="GET or POST here ends the session")
    redirect_after: str = Field("/", description="where the browser goes afterwards (a path)")
    end_session: bool = Field(
        True, description="RP-initiated logout at the IdP's end_session_endpoint when it has one"
    )

    _p = field_validator("path")(classmethod(lambda cls, v: _path(v, "logout.path")))

    @field_validator("redirect_after")
    @classmethod
    def _after(cls, v: str) -> str:
        if not v.startswith(("/", "http://", "https://")) or v.startswith("//") or "\\" in v:
            raise ValueError("redirect_after must be a path (/…) or an absolute http(s) URL")
        return v


class ForwardOptions(PluginConfig):
    id_token_header: str | None = Field(None, description="send the ID token in this header")
    access_token_header: str | None = Field(
        "authorization",
        description="send the access token: authorization → 'Bearer …', other names raw",
    )
    claims_headers: dict[str, str] = Field(
        default_factory=dict, description="upstream header → claim (dotted paths allowed)"
    )

    @model_validator(mode="after")
    def _names(self) -> ForwardOptions:
        names = [*self.claims_headers]
        names += [h for h in (self.id_token_header, self.access_token_header) if h is not None]
        for h in names:
            if not _TOKEN.match(h):
                raise ValueError(f"{h!r} is not a valid header name")
        lowered = [h.lower() for h in names]
        if len(set(lowered)) != len(lowered):
            raise ValueError("the same header is named twice")
        return self


class OidcConfig(IdentityConfig):
    issuer: str = Field(description="the OpenID provider; discovery from its well-known URL")
    client_id: str = Field(min_length=1, description="this gateway's client id at the provider")
    client_secret: str | None = Field(None, description="for client_secret_basic / _post")
    client_auth: Literal["client_secret_basic", "client_secret_post", "private_key_jwt"] = Field(
        "client_secret_basic", description="how the gateway authenticates at the token endpoint"
    )
    private_key_file: str | None = Field(
        None, description="PEM private key for client_auth: private_key_jwt"
    )
    private_key_alg: str = Field("RS256", description="signing algorithm of that key")
    redirect_path: str = Field("/oauth2/callback", description="registered redirect URI's path")
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile", "email"], description="requested scopes"
    )
    pkce: bool = Field(True, description="PKCE with S256 (RFC 7636)")
    session: SessionOptions = Field(description="where and how sessions are kept")
    refresh: bool = Field(True, description="refresh access tokens before they expire")
    refresh_before: Duration = Field(60.0, ge=0, description="refresh this long before expiry")
    bearer: bool = Field(False, description="also accept JWT access tokens from API clients")
    bearer_audiences: list[str] | None = Field(
        None, description="accepted aud of bearer tokens; default: [client_id]"
    )
    unauthenticated: Literal["redirect", "401", "pass"] = Field(
        "redirect",
        description="no session: redirect to the IdP (401 for XHR/JSON/non-GET), 401, or pass",
    )
    logout: LogoutOptions = Field(default_factory=lambda: LogoutOptions())
    forward: ForwardOptions = Field(default_factory=lambda: ForwardOptions())
    consumer_claim: str = Field(
        "sub", description="claim naming the consumer (a configured one's groups apply)"
    )
    groups_claim: str | None = Field(None, description="claim listing the user's groups")
    public_url: str | None = Field(
        None,
        description="scheme://host[:port] of the gateway as browsers see it; default: the "
        "request's Host and X-Forwarded-Proto from trusted proxies",
    )
    timeout: Duration = Field(5.0, gt=0, description="timeout of each call to the provider")
    discovery_refresh: Duration = Field(3600.0, gt=0, description="discovery refresh period")
    jwks_refresh: Duration = Field(300.0, gt=0, description="JWKS refresh period")
    jwks_min_refresh: Duration = Field(
        10.0, ge=0, description="minimum time between JWKS fetches for an unknown kid"
    )
    leeway: Duration = Field(60.0, ge=0, description="clock skew allowed for exp/iat")
    login_timeout: Duration = Field(600.0, gt=0, description="how long a started login is valid")
    max_token_bytes: int = Field(16384, ge=256, description="longer bearer tokens are refused")

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")) or "?" in v or "#" in v:
            raise ValueError("issuer must be an http(s) URL without query or fragment")
        return v

    _rp = field_validator("redirect_path")(classmethod(lambda cls, v: _path(v, "redirect_path")))

    @field_validator("public_url")
    @classmethod
    def _public(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith(("https://", "http://")) or v.count("/") != 2):
            raise ValueError("public_url must be scheme://host[:port] without a path")
        return v

    @model_validator(mode="after")
    def _check(self) -> OidcConfig:
        if "openid" not in self.scopes:
            raise ValueError("scopes must include openid")
        if self.client_auth == "private_key_jwt":
            if self.private_key_file is None:
                raise ValueError("client_auth: private_key_jwt needs private_key_file")
            if self.private_key_alg not in SIGNING_ALGS:
                raise ValueError(f"private_key_alg must be one of {', '.join(SIGNING_ALGS)}")
            from portway.plugins.oidc.provider import load_signing_key

            load_signing_key(self.private_key_file, self.private_key_alg)
        elif self.client_secret is None:
            raise ValueError(f"client_auth: {self.client_auth} needs client_secret")
        if self.logout.path == self.redirect_path:
            raise ValueError("logout.path and redirect_path must differ")
        return self

"""Configuration of the ``jwt`` plugin."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from portway.config.types import Duration
from portway.pipeline.plugin import PluginConfig
from portway.plugins._identity.base import IdentityConfig
from portway.plugins._identity.jose import ALL_ALGS, JwsKey, hmac_key, pem_key
from portway.plugins._identity.tokens import BearerSourceConfig


def _check_algs(v: list[str]) -> list[str]:
    for a in v:
        if a not in ALL_ALGS:
            raise ValueError(f"unsupported algorithm {a!r}; use one of {', '.join(ALL_ALGS)}")
    return v


class IssuerConfig(PluginConfig):
    """A trusted token issuer whose tokens are not tied to a configured consumer."""

    issuer: str = Field(min_length=1, description="exact value of the iss claim")
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256"], min_length=1, description="accepted alg values"
    )
    secret: str | None = Field(None, description="HMAC secret (HS* algorithms only)")
    public_key: str | None = Field(None, description="PEM public key or certificate")
    jwks_url: str | None = Field(None, description="JWKS endpoint of the issuer")
    audiences: list[str] | None = Field(None, description="overrides the plugin's audiences")

    _algs = field_validator("algorithms")(classmethod(lambda cls, v: _check_algs(v)))

    @model_validator(mode="after")
    def _source(self) -> IssuerConfig:
        given = [x for x in (self.secret, self.public_key, self.jwks_url) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of secret, public_key or jwks_url")
        if self.jwks_url is not None and not self.jwks_url.startswith(("http://", "https://")):
            raise ValueError("jwks_url must be an http(s) URL")
        self.static_keys()
        return self

    def static_keys(self) -> list[JwsKey]:
        if self.secret is not None:
            return [hmac_key(self.secret.encode("utf-8"), a) for a in self.algorithms]
        if self.public_key is not None:
            return [pem_key(self.public_key, a) for a in self.algorithms]
        return []


class JwtConfig(IdentityConfig, BearerSourceConfig):
    issuers: list[IssuerConfig] = Field(
        default_factory=list, description="issuers trusted for any subject (e.g. an IdP)"
    )
    consumer_credentials: bool = Field(
        True, description="accept tokens signed with consumers' jwt credentials (by iss)"
    )
    algorithms: list[str] = Field(
        default_factory=lambda: list(ALL_ALGS),
        description="alg values accepted at all (each key is further bound to its own)",
    )
    audiences: list[str] = Field(
        default_factory=list, description="if set, aud must contain one of these"
    )
    required_claims: list[str] = Field(
        default_factory=lambda: ["exp"], description="claims every token must carry"
    )
    leeway: Duration = Field(30.0, description="clock skew allowed for exp/nbf/iat")
    max_age: Duration | None = Field(None, description="refuse tokens whose iat is older")
    max_token_bytes: int = Field(8192, ge=64, description="longer tokens are refused unparsed")
    consumer_claim: str | None = Field(
        None,
        description="for issuer tokens: claim naming a configured consumer (username or id); "
        "when set, tokens that name no consumer are refused",
    )
    groups_claim: str | None = Field(
        None, description="for issuer tokens: claim listing the subject's groups"
    )
    jwks_refresh: Duration = Field(300.0, description="JWKS refresh period")
    jwks_min_refresh: Duration = Field(
        10.0, description="minimum time between JWKS fetches triggered by an unknown kid"
    )
    jwks_timeout: Duration = Field(3.0, description="JWKS fetch timeout")

    _algs = field_validator("algorithms")(classmethod(lambda cls, v: _check_algs(v)))

    @model_validator(mode="after")
    def _unique(self) -> JwtConfig:
        names = [i.issuer for i in self.issuers]
        if len(set(names)) != len(names):
            raise ValueError("duplicate issuer")
        return self

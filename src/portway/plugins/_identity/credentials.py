"""Consumer credential models and the directory entries built from them.

``consumers[].credentials`` keeps each kind as free-form dicts in the gateway schema; the
models here validate them (see :func:`portway.runtime.consumers.build_consumer_directory`).
The ``*Entry`` classes are what auth plugins find in the
:class:`~portway.pipeline.plugin.ConsumerDirectory`: digests, hashes and parsed keys only,
never a clear-text secret.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    # jose imports cryptography (~10 MB of a worker's RSS): loaded by JWT credentials only
    from portway.plugins._identity.jose import JwsKey

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class _Cred(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KeyAuthCredential(_Cred):
    """An API key, given in clear (hashed on load) or as its SHA-256 hex digest."""

    key: str | None = Field(None, min_length=1, description="the API key (kept hashed)")
    key_sha256: str | None = Field(None, description="hex SHA-256 of the API key")

    @model_validator(mode="after")
    def _one(self) -> KeyAuthCredential:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key or key_sha256")
        if self.key_sha256 is not None and not _HEX64.match(self.key_sha256):
            raise ValueError("key_sha256 must be 64 hex digits")
        return self


class BasicAuthCredential(_Cred):
    """A password hash (argon2 or bcrypt) for HTTP Basic authentication."""

    password_hash: str = Field(description="$argon2id$… or $2b$… hash")
    username: str | None = Field(
        None, min_length=1, description="login name; defaults to the consumer's username"
    )

    @model_validator(mode="after")
    def _check(self) -> BasicAuthCredential:
        from portway.plugins._identity.hashing import password_scheme

        password_scheme(self.password_hash)
        if self.username is not None and ":" in self.username:
            raise ValueError("a Basic auth username cannot contain ':' (RFC 7617)")
        return self


class JwtCredential(_Cred):
    """A JWT signing identity: tokens whose ``iss`` equals ``issuer`` belong to the consumer."""

    issuer: str = Field(min_length=1, description="value of the token's iss claim")
    algorithm: str = Field("HS256", description="the only alg this key verifies")
    secret: str | None = Field(None, description="HMAC secret (HS256/384/512)")
    secret_base64: bool = Field(False, description="secret is base64/base64url encoded")
    public_key: str | None = Field(None, description="PEM public key or certificate")
    kid: str | None = Field(None, description="restrict to tokens with this kid")

    @model_validator(mode="after")
    def _one(self) -> JwtCredential:
        if (self.secret is None) == (self.public_key is None):
            raise ValueError("give exactly one of secret or public_key")
        self.to_key()
        return self

    def to_key(self) -> JwsKey:
        from portway.plugins._identity.jose import hmac_key, pem_key

        if self.secret is not None:
            raw = self.secret.encode("utf-8")
            if self.secret_base64:
                try:
                    raw = base64.urlsafe_b64decode(
                        self.secret.replace("+", "-").replace("/", "_") + "=" * (-len(raw) % 4)
                    )
                except (binascii.Error, ValueError) as e:
                    raise ValueError("secret is not valid base64") from e
            return hmac_key(raw, self.algorithm, self.kid)
        assert self.public_key is not None
        return pem_key(self.public_key, self.algorithm, self.kid)


class MtlsCredential(_Cred):
    """A client-certificate identity: an exact subject DN or one subject alternative name."""

    subject: str | None = Field(None, description='RFC 4514 DN, e.g. "CN=alice,O=Acme"')
    san: str | None = Field(None, description="a DNS, email, URI or IP SAN value")

    @model_validator(mode="after")
    def _one(self) -> MtlsCredential:
        if (self.subject is None) == (self.san is None):
            raise ValueError("give exactly one of subject or san")
        if self.subject is not None:
            from portway.plugins._identity.dn import parse_dn

            parse_dn(self.subject)
        return self


@dataclass(frozen=True, slots=True)
class KeyEntry:
    digest: str
    credential: str


@dataclass(frozen=True, slots=True)
class BasicEntry:
    hashes: tuple[str, ...]
    credential: str


@dataclass(frozen=True, slots=True)
class JwtEntry:
    keys: tuple[JwsKey, ...]
    credential: str


@dataclass(frozen=True, slots=True)
class MtlsEntry:
    credential: str

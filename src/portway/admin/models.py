"""Response bodies of the admin API, as pydantic models: they document the API (the OpenAPI
spec is generated from them and from the config schema) and tests validate responses with
them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfigIssueBody(_Body):
    path: str = Field("", description="location in the document, e.g. routes[0].match.paths[1]")
    line: int | None = Field(None, description="1-based line in the submitted text")
    column: int | None = None
    message: str


class ErrorBody(_Body):
    """The gateway's JSON error format, plus ``errors`` for rejected configurations."""

    error: str
    code: str
    status: int
    request_id: str | None = None
    errors: list[ConfigIssueBody] | None = None


class LastReload(_Body):
    result: Literal["ok", "error", "none"]
    errors: list[ConfigIssueBody] = Field(default_factory=list)
    at: float | None = Field(None, description="epoch seconds")


class StatusBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: str
    uptime: float = Field(description="seconds since the process started")
    workers: int
    config_hash: str | None
    last_reload: LastReload


class ApplyResult(_Body):
    result: Literal["ok"]
    config_hash: str | None = None
    written: bool = Field(False, description="the config file was rewritten")
    warnings: list[str] = Field(
        default_factory=list,
        description="POST /reload: consumers created or changed through the API without "
        "write_back whose changes the reload from the file dropped",
    )


class ValidateResult(_Body):
    valid: bool
    errors: list[ConfigIssueBody] = Field(default_factory=list)


class RouteSummary(_Body):
    name: str
    rank: int | None = Field(None, description="matching priority (1 first) of its first path")
    hosts: list[str]
    paths: list[str]
    methods: list[str]
    upstream: str | None
    plugins: list[str]


class RouteList(_Body):
    data: list[RouteSummary]


class TargetState(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    url: str
    weight: int
    healthy: bool
    draining: bool
    breaker: str | None
    in_flight: int
    ewma_ms: float


class UpstreamState(_Body):
    name: str
    balancing: str
    targets: list[TargetState]


class UpstreamList(_Body):
    data: list[UpstreamState]


class DrainResult(_Body):
    upstream: str
    target: str
    draining: bool
    lagging: list[int] = Field(
        default_factory=list, description="workers that had not applied the change in time"
    )


class CredentialView(BaseModel):
    """One credential with its secrets replaced by ``<redacted>``."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="stable fingerprint; use it to delete the credential")
    kind: Literal["key_auth", "basic_auth", "jwt", "mtls"]


class ConsumerView(_Body):
    username: str
    id: str | None
    groups: list[str]
    credentials: list[CredentialView]


class ConsumerList(_Body):
    data: list[ConsumerView]


class CredentialList(_Body):
    data: list[CredentialView]


class CreatedCredential(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    kind: str
    generated_key: str | None = Field(
        None, description="key_auth only: the key the server generated, shown this once"
    )


class PurgeResult(_Body):
    purged: int = Field(description="cache objects removed")


class CredentialsInput(_Body):
    """Credentials by kind, as in ``portway.yaml``; clear keys/passwords are stored hashed."""

    key_auth: list[dict[str, Any]] = Field(default_factory=list)
    basic_auth: list[dict[str, Any]] = Field(default_factory=list)
    jwt: list[dict[str, Any]] = Field(default_factory=list)
    mtls: list[dict[str, Any]] = Field(default_factory=list)


class CredentialItem(BaseModel):
    """A credential in the list form ``GET /consumers/{username}`` shows: an item with the
    ``id`` of an existing credential keeps that credential (its redacted fields are not
    read); an item without ``id`` adds a credential of ``kind`` from its other fields."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    kind: Literal["key_auth", "basic_auth", "jwt", "mtls"]


class ConsumerUpdate(_Body):
    """Body of ``PUT /consumers/{username}`` (the URL names the consumer). What ``GET`` returns
    can be sent back as is. ``credentials``: absent keeps the consumer's credentials; a
    mapping by kind (as in ``portway.yaml``) replaces them all; a list (as ``GET`` shows
    them) keeps the listed ids and adds the items without one."""

    username: str | None = Field(
        None, description="optional; when given it must equal the username in the URL"
    )
    id: str | None = Field(None, min_length=1, max_length=128)
    groups: list[str] = Field(default_factory=list)
    credentials: CredentialsInput | list[CredentialItem] | None = None


class ConsumerInput(_Body):
    """Body of ``POST /consumers``."""

    # (not "." nor "..": a URL path cannot name them, RFC 3986 removes dot segments)
    username: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^(?:[A-Za-z0-9_.@:+-]*[A-Za-z0-9_@:+-][A-Za-z0-9_.@:+-]*|\.{3,})$",
    )
    id: str | None = Field(None, min_length=1, max_length=128)
    groups: list[str] = Field(default_factory=list)
    credentials: CredentialsInput = Field(default_factory=CredentialsInput)

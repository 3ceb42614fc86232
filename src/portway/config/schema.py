"""The configuration model: the public contract of ``portway.yaml``.

Every model is frozen, rejects unknown keys and documents each field; the same models generate
the admin API's OpenAPI spec. Plugin configs are validated separately against each plugin's own
``Config`` model (see :mod:`portway.config.loader`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from portway.config.paths import parse_path
from portway.config.tracing import TracingConfig
from portway.config.traffic import FallbackConfig, MirrorConfig, SplitConfig, VersionsConfig
from portway.config.types import Duration, Model, Size, TlsVersion
from portway.config.upstreams import (
    ActiveHealthConfig,
    Balancing,
    CircuitBreakerConfig,
    DiscoveryConfig,
    HealthConfig,
    PassiveHealthConfig,
    PoolConfig,
    RetryConfig,
    RetryOn,
    TargetConfig,
    TimeoutsConfig,
    UpstreamConfig,
    UpstreamTlsConfig,
)

# every model of the config, those defined in upstreams.py included (re-exported here)
__all__ = [
    "ActiveHealthConfig",
    "AdminConfig",
    "AggregateCall",
    "AggregateConfig",
    "AlpnProtocol",
    "Balancing",
    "CertificateConfig",
    "CircuitBreakerConfig",
    "ConsumerConfig",
    "CredentialsConfig",
    "DiscoveryConfig",
    "FieldsConfig",
    "GatewayConfig",
    "HealthConfig",
    "LimitsConfig",
    "ListenerConfig",
    "MatchConfig",
    "MatchTlsConfig",
    "Model",
    "PartialConfig",
    "PassiveHealthConfig",
    "PluginBinding",
    "PoolConfig",
    "ProfileConfig",
    "ProfileMatchConfig",
    "RequestBufferingConfig",
    "RetryConfig",
    "RetryOn",
    "RouteConfig",
    "ServerConfig",
    "StateConfig",
    "TargetConfig",
    "TimeoutsConfig",
    "TlsConfig",
    "TlsVersion",
    "UpstreamConfig",
    "UpstreamTlsConfig",
]


def _check_addr(v: str) -> str:
    _host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address must be HOST:PORT, got {v!r}")
    return v


class CertificateConfig(Model):
    cert: str = Field(description="PEM certificate chain file (leaf first, then intermediates)")
    key: str = Field(description="PEM private key file of the leaf certificate")


AlpnProtocol = Literal["h2", "http/1.1"]
_DEFAULT_ALPN: tuple[AlpnProtocol, ...] = ("h2", "http/1.1")


class TlsConfig(Model):
    """TLS termination on a listener. The legacy single ``{cert, key}`` form is still accepted
    and becomes ``certificates[0]`` (the default certificate)."""

    certificates: list[CertificateConfig] = Field(
        default_factory=list,
        description="certificates chosen by SNI (exact name, then wildcard, from each "
        "certificate's SANs); the first is the default for unknown or absent names",
    )
    min_version: TlsVersion = Field("1.2", description="lowest TLS version accepted")
    ciphers: str = Field(
        "default", description="OpenSSL cipher string for TLS 1.2 (TLS 1.3 suites are fixed)"
    )
    client_ca: str | None = Field(None, description="CA bundle to verify client certificates")
    client_cert: Literal["none", "optional", "required"] = Field(
        "none", description="client certificate verification mode"
    )
    alpn: list[AlpnProtocol] = Field(
        default_factory=lambda: list(_DEFAULT_ALPN),
        description="ALPN protocols offered, in preference order (h2 only with http2: true)",
    )
    session_tickets: bool = Field(True, description="issue TLS session tickets (resumption)")

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        # tls: {cert, key} (one certificate) is the form of earlier releases
        if isinstance(data, dict) and ("cert" in data or "key" in data):
            data = dict(data)
            first = {k: data.pop(k) for k in ("cert", "key") if k in data}
            certs = data.get("certificates")
            data["certificates"] = [first, *(certs if isinstance(certs, list) else [])]
        return data

    @model_validator(mode="after")
    def _some(self) -> TlsConfig:
        if not self.certificates:
            raise ValueError("tls needs at least one entry in certificates")
        if not self.alpn:
            raise ValueError("alpn needs at least one protocol")
        return self


def _have_aioquic() -> bool:
    try:
        import aioquic  # noqa: F401
    except ImportError:
        return False
    return True


class ListenerConfig(Model):
    name: str = Field("public", description="listener name, used in logs and metrics")
    address: str = Field("127.0.0.1:8080", description="HOST:PORT to bind")
    tls: TlsConfig | None = Field(None, description="terminate TLS on this listener")
    http2: bool = Field(
        True, description="offer HTTP/2 (ALPN h2 on TLS, prior-knowledge h2c on cleartext)"
    )
    underscores_in_headers: bool = Field(
        False,
        description="keep request header fields whose name contains '_' (default: drop them, "
        "as nginx does: servers that fold '_' into '-' would read X_User_ID as X-User-ID); "
        "underscore spellings of headers the gateway sets are dropped either way",
    )
    quic: bool = Field(
        False,
        description="also serve HTTP/3 over QUIC (UDP) on this TLS listener, advertised to "
        "TCP clients by Alt-Svc; needs the http3 extra (pip install 'portway[http3]')",
    )
    quic_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="UDP port of the QUIC endpoint; default: the listener's own port number "
        "(what browsers expect)",
    )

    _addr = field_validator("address")(classmethod(lambda cls, v: _check_addr(v)))

    @field_validator("quic")
    @classmethod
    def _quic(cls, v: bool, info: ValidationInfo) -> bool:
        if not v:
            return v
        if "tls" not in info.data:
            return v  # tls itself is invalid and reported
        tls: TlsConfig | None = info.data["tls"]
        if tls is None:
            raise ValueError("quic: true needs tls on the listener (QUIC is always encrypted)")
        if tls.client_cert == "required":
            # aioquic does not request client certificates: every QUIC client would pass
            raise ValueError(
                "quic: true cannot be combined with tls.client_cert: required "
                "(QUIC connections carry no client certificate)"
            )
        if not _have_aioquic():
            raise ValueError("quic: true needs the aioquic package: pip install 'portway[http3]'")
        return v


class RequestBufferingConfig(Model):
    max: Size = Field(
        1024 * 1024,
        description="request bodies up to this size are read whole before an upstream "
        "connection is taken; larger (or longer) ones stream",
    )


class LimitsConfig(Model):
    max_header_bytes: Size = Field(32 * 1024, description="header section limit (431)")
    max_header_count: int = Field(100, ge=1, description="header field count limit (431)")
    max_uri_bytes: Size = Field(8 * 1024, description="request-target length limit (414)")
    max_body_bytes: Size | None = Field(
        None, description="request body limit (413); none = unlimited"
    )
    header_timeout: Duration = Field(10.0, description="time allowed to receive the request head")
    body_timeout: Duration = Field(
        60.0, description="max wait between request body bytes from the client (408)"
    )
    idle_timeout: Duration = Field(60.0, description="keep-alive idle time before closing")
    max_pipelined: int = Field(32, ge=1, description="queued pipelined requests per connection")
    request_buffering: RequestBufferingConfig | None = Field(
        None, description="default request_buffering of routes that set none (none: stream)"
    )


class ServerConfig(Model):
    workers: int | None = Field(None, ge=1, description="worker processes; default: CPU count")
    shutdown_timeout: Duration = Field(30.0, description="grace period for in-flight requests")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs whose X-Forwarded-* headers are kept; others are replaced",
    )
    via: str | None = Field("portway", description="pseudonym added to Via; null disables Via")
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    debug_token: str | None = Field(
        None, description="secret that enables X-Portway-Debug explanations"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for c in v:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError as e:
                raise ValueError(f"invalid CIDR {c!r}") from e
        return v


class AdminConfig(Model):
    enabled: bool = Field(True, description="serve the admin API")
    address: str = Field("127.0.0.1:9901", description="HOST:PORT of the admin listener")
    token: str | None = Field(None, description="bearer token required by the admin API")
    auth: bool = Field(True, description="require the token; may be false only on loopback")
    write_back: bool = Field(False, description="PUT /config also rewrites the config file")

    _addr = field_validator("address")(classmethod(lambda cls, v: _check_addr(v)))


class PluginBinding(Model):
    name: str = Field(description="registered plugin name")
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)
    module: str | None = Field(
        None,
        description="load the plugin class from 'package.module:Class' (importable, or in "
        "one of plugin_paths) instead of by name",
    )


class MatchTlsConfig(Model):
    client_cert: bool = Field(
        False,
        description="the connection must have presented a verified client certificate "
        "(listener client_cert: optional or required); otherwise 403",
    )


def _header_specs(v: dict[str, str]) -> dict[str, str]:
    """``{name: value | "~regex"}`` with names lower-cased and every regex compiled once."""
    for k, val in v.items():
        if val.startswith("~"):
            try:
                re.compile(val[1:])
            except re.error as e:
                raise ValueError(f"header {k}: invalid regex: {e}") from e
    return {k.lower(): val for k, val in v.items()}


class MatchConfig(Model):
    hosts: list[str] = Field(default_factory=list, description="exact or *.suffix hosts")
    paths: list[str] = Field(
        default_factory=lambda: ["/"],
        description="/prefix, =/exact, /tpl/{id}, /files/{rest:path}, ~regex",
    )
    methods: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict, description='exact value or "~regex"')
    tls: MatchTlsConfig | None = Field(None, description="TLS requirements of the connection")

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        out = [m.upper() for m in v]
        for m in out:
            if not re.fullmatch(r"[A-Z]+", m):
                raise ValueError(f"invalid method {m!r}")
        return out

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        out = []
        for h in v:
            h = h.lower()
            if not re.fullmatch(r"(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d+)?", h):
                raise ValueError(f"invalid host pattern {h!r}")
            out.append(h)
        return out

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one path is required")
        for p in v:
            if p.startswith("~"):
                try:
                    re.compile(p[1:])
                except re.error as e:
                    raise ValueError(f"invalid regex {p[1:]!r}: {e}") from e
            elif not p.lstrip("=").startswith("/"):
                raise ValueError(f"path {p!r} must start with '/', '=/' or '~'")
            else:
                # Template syntax ({id}, {rest:path}) is checked by the router's own parser.
                parse_path(p)
        return v

    _headers = field_validator("headers")(classmethod(lambda cls, v: _header_specs(v)))


class FieldsConfig(Model):
    allow: list[str] = Field(
        default_factory=list, description="JSON paths to keep (all others dropped); empty keeps all"
    )
    deny: list[str] = Field(default_factory=list, description="JSON paths to drop")
    rename: dict[str, str] = Field(default_factory=dict, description="JSON path -> new key")


class AggregateCall(Model):
    name: str = Field(description="key of this call's result in the merged body")
    upstream: str = Field(description="upstream name (balancer, health, breaker, retries apply)")
    path: str = Field(
        description="path and query template: {params.NAME}, {CALL.JSON_PATH} of an earlier call"
    )
    method: str = Field("GET", description="HTTP method of the call")
    timeout: Duration | None = Field(None, description="this call's deadline (retries included)")
    required: bool = Field(False, description="a failure fails the whole request (502/504)")
    fields: FieldsConfig | None = Field(None, description="allow/deny/rename on the result")
    group: str | None = Field(None, description="put the result under this key")
    target: str | None = Field(None, description="JSON path of the sub-object to take")

    @field_validator("name")
    @classmethod
    def _call_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", v):
            raise ValueError("call names use letters, digits, _ and - (not starting with a digit)")
        return v

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        v = v.upper()
        if not re.fullmatch(r"[A-Z]+", v):
            raise ValueError(f"invalid method {v!r}")
        return v


class PartialConfig(Model):
    status: int = Field(200, ge=200, le=599, description="status of a partial response")
    header: str = Field("x-portway-partial", description="response field flagging a partial one")

    @field_validator("header")
    @classmethod
    def _header(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", v):
            raise ValueError(f"invalid header name {v!r}")
        return v.lower()


class AggregateConfig(Model):
    timeout: Duration = Field(5.0, description="deadline of the whole aggregate")
    calls: list[AggregateCall] = Field(min_length=1, description="the upstream calls")
    merge: Literal["nest", "flat"] = Field(
        "nest", description="nest: each result under its name; flat: deep-merged at the root"
    )
    on_partial: PartialConfig = Field(default_factory=PartialConfig)


class ProfileMatchConfig(Model):
    listeners: list[str] = Field(default_factory=list, description="listener names")
    hosts: list[str] = Field(default_factory=list, description="exact or *.suffix hosts")
    headers: dict[str, str] = Field(default_factory=dict, description='exact value or "~regex"')

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        out = [h.lower() for h in v]
        for h in out:
            if not re.fullmatch(r"(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d+)?", h):
                raise ValueError(f"invalid host pattern {h!r}")
        return out

    _headers = field_validator("headers")(classmethod(lambda cls, v: _header_specs(v)))


class ProfileConfig(Model):
    match: ProfileMatchConfig = Field(description="all given conditions must hold")
    plugins: list[PluginBinding] = Field(
        default_factory=list, description="bindings added around each route's own"
    )


def _addressable(name: str, what: str) -> str:
    """``name`` unless it is ``.`` or ``..``: the admin API names things in URL paths, where
    RFC 3986 removes those segments (``/routes/.`` is ``/routes/``)."""
    if name in (".", ".."):
        raise ValueError(f"{what} cannot be {name!r}: no URL path can name it")
    return name


class RouteConfig(Model):
    name: str = Field(description="unique route name")
    match: MatchConfig = Field(default_factory=MatchConfig)
    upstream: str | None = Field(None, description="upstream name")
    aggregate: AggregateConfig | None = Field(
        None, description="fan out to several upstreams and merge (instead of upstream)"
    )
    profiles: list[str] | None = Field(
        None, description="profiles this route serves (default = no profile matched); all if unset"
    )
    strip_prefix: bool = Field(False, description="remove the matched prefix before forwarding")
    rewrite: str | None = Field(None, description="path template, may use {params}")
    plugins: list[PluginBinding] = Field(default_factory=list)
    allow_encoded_slashes: bool = Field(False, description="accept %2F and %5C in paths")
    max_body_bytes: Size | None = Field(None, description="overrides server.limits.max_body_bytes")
    retry_non_idempotent: bool = Field(False)
    timeouts: TimeoutsConfig | None = Field(None, description="overrides the upstream's")
    preserve_host: bool | None = None
    split: SplitConfig | None = Field(None, description="weighted canary / blue-green")
    mirror: MirrorConfig | None = Field(None, description="copy requests to a shadow upstream")
    fallback: FallbackConfig | None = Field(None, description="strangler fig: a second upstream")
    versions: VersionsConfig | None = Field(None, description="API version routing")
    websocket: bool = Field(
        True,
        description="tunnel WebSocket upgrades (Upgrade: websocket) on this route; other "
        "upgrade protocols (h2c, ...) are never tunnelled",
    )
    request_buffering: RequestBufferingConfig | None = Field(
        None,
        description="read request bodies up to max whole before taking an upstream connection "
        "(a slow client then holds no upstream connection); default: "
        "server.limits.request_buffering",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", v):
            raise ValueError("route names use letters, digits, _ . : -")
        return _addressable(v, "a route name")

    @model_validator(mode="after")
    def _traffic(self) -> RouteConfig:
        if self.split is not None and self.versions is not None:
            raise ValueError("a route takes split or versions, not both (split per version route)")
        if (self.split or self.mirror or self.fallback or self.versions) and self.upstream is None:
            raise ValueError("split, mirror, fallback and versions need the route's upstream")
        return self


class CredentialsConfig(Model):
    key_auth: list[dict[str, Any]] = Field(default_factory=list)
    basic_auth: list[dict[str, Any]] = Field(default_factory=list)
    jwt: list[dict[str, Any]] = Field(default_factory=list)
    mtls: list[dict[str, Any]] = Field(default_factory=list)


class ConsumerConfig(Model):
    username: str
    id: str | None = None
    groups: list[str] = Field(default_factory=list)
    credentials: CredentialsConfig = Field(default_factory=CredentialsConfig)

    _username = field_validator("username")(
        classmethod(lambda cls, v: _addressable(v, "a consumer username"))
    )


_REDIS_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
)


class StateConfig(Model):
    backend: Literal["memory", "redis"] = Field("memory", description="default state store")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis://host:port/db, redis+cluster://host:port[,host:port] (Redis "
        "Cluster seeds) or redis+sentinel://host:port[,host:port]/master_name[/db]",
    )
    cluster: bool = Field(
        False, description="redis_url (redis://) names a seed node of a Redis Cluster"
    )
    key_prefix: str = Field("portway:")
    sync_config: bool = Field(
        False,
        description="share configs applied through the admin API with every instance that "
        "uses the same Redis and key_prefix (Redis pub/sub notices)",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        scheme, sep, rest = v.partition("://")
        if not sep or scheme.lower() not in _REDIS_SCHEMES or not rest:
            raise ValueError(
                f"redis_url must be redis://, rediss://, unix://, redis+cluster:// or "
                f"redis+sentinel://, got {v!r}"
            )
        if scheme.lower().endswith("+sentinel") and "/" not in rest.strip("/"):
            raise ValueError(
                "a sentinel URL names the primary: redis+sentinel://host:26379/mymaster/0"
            )
        return v


class GatewayConfig(Model):
    """Root of ``portway.yaml``."""

    listeners: list[ListenerConfig] = Field(default_factory=lambda: [ListenerConfig()])
    server: ServerConfig = Field(default_factory=ServerConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    plugins: list[PluginBinding] = Field(default_factory=list, description="global bindings")
    plugin_paths: list[str] = Field(
        default_factory=list,
        description="directories holding plugin files (<name>.py or <name>/), relative to "
        "the config file",
    )
    consumers: list[ConsumerConfig] = Field(default_factory=list)
    profiles: dict[str, ProfileConfig] = Field(
        default_factory=dict, description="BFF profiles, tried in order; first match wins"
    )
    tracing: TracingConfig = Field(default_factory=TracingConfig)

    @field_validator("upstreams")
    @classmethod
    def _upstream_names(cls, v: dict[str, UpstreamConfig]) -> dict[str, UpstreamConfig]:
        for name in v:
            _addressable(name, "an upstream name")
        return v

    @model_validator(mode="after")
    def _refs(self) -> GatewayConfig:
        seen: set[str] = set()
        for r in self.routes:
            if r.name in seen:
                raise ValueError(f"duplicate route name {r.name!r}")
            seen.add(r.name)
        users: set[str] = set()
        for c in self.consumers:
            if c.username in users:
                raise ValueError(f"duplicate consumer {c.username!r}")
            users.add(c.username)
        return self

"""Config of ``cors`` and the origin matcher compiled from it."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from portway.config.types import Duration
from portway.pipeline.plugin import PluginConfig

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.1 token
#: scheme "://" host [":" port], the serialisation of an origin (RFC 6454 §6.2)
_ORIGIN = re.compile(r"^([a-z][a-z0-9+.-]*)://(\*\.)?([a-z0-9-]+(?:\.[a-z0-9-]+)*)(?::(\d{1,5}))?$")
_LABELS = re.compile(r"^[a-z0-9-]+(?:\.[a-z0-9-]+)*$")


class CorsConfig(PluginConfig):
    """Cross-origin resource sharing (Fetch standard)."""

    allow_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description='origins allowed: exact ("https://app.example.com"), wildcard subdomains '
        '("https://*.example.org"), "null", or ["*"] for any origin',
    )
    allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        description='methods a preflight may allow, or ["*"] (the requested one is allowed)',
    )
    allow_headers: list[str] = Field(
        default_factory=list,
        description='request headers a preflight may allow, or ["*"] (the requested ones are '
        "echoed, which also works with credentials and covers Authorization)",
    )
    expose_headers: list[str] = Field(
        default_factory=list, description="response headers the browser may let scripts read"
    )
    allow_credentials: bool = Field(False, description="send Access-Control-Allow-Credentials")
    max_age: Duration | None = Field(None, description="how long a preflight may be cached")
    private_network: bool = Field(
        False,
        description="answer Access-Control-Request-Private-Network preflights with "
        "Access-Control-Allow-Private-Network: true",
    )

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        out = []
        for o in v:
            low = o.strip().lower().rstrip("/")
            if low in ("*", "null"):
                out.append(low)
                continue
            m = _ORIGIN.match(low)
            if m is None:
                raise ValueError(
                    f"invalid origin {o!r}: use scheme://host[:port] (no path), "
                    "scheme://*.domain for subdomains, 'null' or '*'"
                )
            if m.group(4) is not None and not 0 < int(m.group(4)) < 65536:
                raise ValueError(f"invalid port in origin {o!r}")
            out.append(low)
        if "*" in out and len(out) > 1:
            raise ValueError('"*" already allows every origin: list it alone')
        return out

    @field_validator("allow_methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        for m in v:
            if m != "*" and not _TOKEN.match(m):
                raise ValueError(f"invalid method {m!r}")
        # methods are case-sensitive (RFC 9110 §9.1); the usual ones are upper-case
        return [m.upper() if m.upper() in _STANDARD else m for m in v]

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _headers(cls, v: list[str]) -> list[str]:
        for h in v:
            if h != "*" and not _TOKEN.match(h):
                raise ValueError(f"invalid header name {h!r}")
        return [h.lower() for h in v]

    @model_validator(mode="after")
    def _credentials(self) -> CorsConfig:
        if self.allow_credentials and "*" in self.allow_origins:
            # the Fetch standard refuses "*" with credentials, and echoing any Origin instead
            # would let every site read credentialed answers
            raise ValueError(
                'allow_credentials: true needs explicit allow_origins, not ["*"]: '
                "list the origins (wildcard subdomains such as https://*.example.com are fine)"
            )
        return self


_STANDARD = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


class OriginMatcher:
    """Decides whether a request's Origin is allowed.

    Exact origins compare as whole lower-cased strings. ``scheme://*.domain[:port]`` matches
    an origin with the same scheme and port whose host is one or more labels followed by
    ``.domain``: ``https://*.example.org`` matches ``https://a.example.org`` and
    ``https://a.b.example.org`` but not ``https://example.org``,
    ``https://evil-example.org`` or ``https://example.org.evil.com``.
    """

    def __init__(self, origins: list[str]) -> None:
        self.any = "*" in origins
        self._exact = frozenset(o for o in origins if "*" not in o)
        #: (scheme, "." + domain, port or None)
        self._wild: list[tuple[str, str, str | None]] = []
        for o in origins:
            if o != "*" and "*" in o:
                m = _ORIGIN.match(o)
                assert m is not None  # validated by the config
                self._wild.append((m.group(1), "." + m.group(3), m.group(4)))

    def allows(self, origin: str) -> bool:
        if self.any:
            return True
        low = origin.lower()
        if low in self._exact:
            return True
        if not self._wild:
            return False
        scheme, sep, rest = low.partition("://")
        if not sep:
            return False
        host, colon, port = rest.partition(":")
        port_or_none = port if colon else None
        for w_scheme, suffix, w_port in self._wild:
            if scheme != w_scheme or port_or_none != w_port:
                continue
            if host.endswith(suffix) and len(host) > len(suffix):
                labels = host[: -len(suffix)]
                if _LABELS.match(labels):
                    return True
        return False

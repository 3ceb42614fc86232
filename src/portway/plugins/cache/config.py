"""Configuration model of the ``cache`` plugin."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from portway.config.types import Duration, Size, parse_duration
from portway.pipeline.plugin import PluginConfig

_SIMPLE_KEY_PARTS = frozenset({"method", "scheme", "host", "path", "query", "consumer"})
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.!#$%&'*+^`|~-]+$")
_HEADER_PART = re.compile(r"^(header|cookie):[A-Za-z0-9_.!#$%&'*+^`|~-]+$")


class QueryKeyConfig(PluginConfig):
    """How the query string enters the cache key."""

    include: list[str] | None = Field(
        None, description="keep only these parameters (by name); null keeps all"
    )
    exclude: list[str] = Field(default_factory=list, description="drop these parameters")
    sort: bool = Field(False, description="sort parameters by name so order does not matter")


def _stale_setting(v: Any) -> bool | float:
    if isinstance(v, bool):
        return v
    return parse_duration(v)


class CacheConfig(PluginConfig):
    """``cache`` plugin settings. Durations accept ``30s``/``5m``; sizes accept ``8MB``."""

    store: Literal["memory", "redis", "tiered"] = Field(
        "memory",
        description="memory (LRU bounded by max_memory), redis, or tiered (memory over redis)",
    )
    max_memory: Size = Field(256 * 1024**2, description="byte budget of the memory tier")
    max_object: Size = Field(8 * 1024**2, description="larger responses are never stored")
    default_ttl: Duration = Field(
        0.0,
        description="freshness given to cacheable responses without explicit freshness "
        "(0 = use RFC 9111 heuristics only)",
    )
    heuristic: bool = Field(True, description="allow heuristic freshness (RFC 9111 §4.2.2)")
    heuristic_max: Duration = Field(86400.0, description="cap on heuristic freshness")
    methods: list[str] = Field(
        default_factory=lambda: ["GET", "HEAD"], description="methods answered from the cache"
    )
    key: list[str | dict[str, QueryKeyConfig]] = Field(
        default_factory=lambda: list[str | dict[str, QueryKeyConfig]](
            ["method", "host", "path", "query"]
        ),
        description="cache key parts: method, scheme, host, path, query, consumer, "
        "header:NAME, cookie:NAME, or {query: {include, exclude, sort}}",
    )
    vary_headers: list[str] = Field(
        default_factory=lambda: ["accept-encoding"],
        description="request headers that always select a variant, besides the response's Vary",
    )
    stale_while_revalidate: bool | float = Field(
        True,
        description="true: honour the stale-while-revalidate directive; a duration also sets "
        "the window for responses without one; false: never",
    )
    stale_if_error: bool | float = Field(
        True,
        description="true: honour the stale-if-error directive; a duration also sets the "
        "window for responses without one; false: never",
    )
    store_set_cookie: bool = Field(False, description="store responses that carry Set-Cookie")
    retain_stale: Duration = Field(
        600.0, description="keep stale entries with validators this long for revalidation"
    )
    collapse: bool = Field(True, description="concurrent misses for one key share one fetch")
    collapse_timeout: Duration = Field(
        10.0, description="how long a collapsed request waits for the leading fetch"
    )
    redis_url: str | None = Field(None, description="Redis URL; default: state.redis_url")
    redis_prefix: str | None = Field(
        None, description="Redis key prefix; default: state.key_prefix + 'cache:'"
    )
    redis_timeout: Duration = Field(0.5, description="Redis socket timeout")
    memory_front_max_ttl: Duration = Field(
        5.0, description="tiered: the memory tier keeps an object at most this long"
    )
    expose_key: bool = Field(False, description="add X-Cache-Key (the key purge_key takes)")
    targeted_cache_control: list[str] = Field(
        default_factory=lambda: ["Portway-Cache-Control", "CDN-Cache-Control"],
        description="RFC 9213 target list, most specific first: the first of these response "
        "fields that is present and valid replaces Cache-Control and Expires for this cache "
        "([] = obey Cache-Control only)",
    )
    strip_targeted_cache_control: list[str] = Field(
        default_factory=lambda: ["Portway-Cache-Control"],
        description="targeted fields removed from responses to clients (they address this "
        "cache alone); CDN-Cache-Control is passed on for caches further down",
    )

    _stale = field_validator("stale_while_revalidate", "stale_if_error", mode="before")(
        classmethod(lambda cls, v: _stale_setting(v))
    )

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        out = [m.upper() for m in v]
        bad = [m for m in out if m not in ("GET", "HEAD")]
        if bad:
            raise ValueError(f"only GET and HEAD responses can be cached, not {bad}")
        return out

    @field_validator("key")
    @classmethod
    def _key(cls, v: list[str | dict[str, QueryKeyConfig]]) -> list[str | dict[str, Any]]:
        out: list[str | dict[str, Any]] = []
        for part in v:
            if isinstance(part, str):
                p = part.lower() if part.lower() in _SIMPLE_KEY_PARTS else part
                if p not in _SIMPLE_KEY_PARTS and not _HEADER_PART.match(p):
                    raise ValueError(
                        f"unknown key part {part!r}: use method, scheme, host, path, query, "
                        "consumer, header:NAME or cookie:NAME"
                    )
                out.append(p)
            else:
                if set(part) != {"query"}:
                    raise ValueError("a key part mapping must be {query: {...}}")
                out.append(part)
        if not out:
            raise ValueError("the cache key needs at least one part")
        return out

    @field_validator("targeted_cache_control", "strip_targeted_cache_control")
    @classmethod
    def _field_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _FIELD_NAME.match(name):
                raise ValueError(f"not a header field name: {name!r}")
        return v

    @field_validator("vary_headers")
    @classmethod
    def _vary(cls, v: list[str]) -> list[str]:
        return sorted({h.strip().lower() for h in v if h.strip()})

    @model_validator(mode="after")
    def _sizes(self) -> CacheConfig:
        if self.max_object > self.max_memory and self.store != "redis":
            raise ValueError("max_object must not exceed max_memory")
        return self

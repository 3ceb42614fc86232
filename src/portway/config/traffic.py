"""Route-level traffic management config: ``split``, ``mirror``, ``fallback``, ``versions``.

The keys are the contract of issue 21 (see ``docs/traffic.md``). The runtime behaviour lives
in :mod:`portway.proxy.traffic`; upstream names are checked against ``upstreams:`` by the
loader (with the YAML line of the bad reference).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from portway.config.types import Size

#: percents are kept in basis points (1/100 of a percent): 10 000 buckets
BUCKETS = 10_000

_NAME = r"[A-Za-z0-9_.-]+"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Condition(_Model):
    """All given conditions must hold (an empty condition always holds)."""

    headers: dict[str, str] = Field(
        default_factory=dict,
        description='request header name → exact value, "*" (present) or "~regex"',
    )
    consumers: list[str] = Field(
        default_factory=list, description="authenticated consumer usernames (any of them)"
    )

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", k):
                raise ValueError(f"invalid header name {k!r}")
            if val.startswith("~"):
                try:
                    re.compile(val[1:])
                except re.error as e:
                    raise ValueError(f"header {k}: invalid regex: {e}") from e
        return {k.lower(): val for k, val in v.items()}


def _percent(v: float) -> float:
    if round(v * 100) != round(v * 100, 6):
        raise ValueError("percent has at most two decimals (basis points)")
    return v


class SplitTo(_Model):
    upstream: str = Field(description="upstream that gets this share")
    percent: float = Field(ge=0, le=100, description="share of requests, 0-100 (0.01 steps)")

    _p = field_validator("percent")(classmethod(lambda cls, v: _percent(v)))


class ForceRule(_Model):
    when: Condition = Field(description="requests this rule applies to")
    upstream: str = Field(description="upstream that serves them, whatever the weights")


class SplitConfig(_Model):
    """Weighted canary / blue-green: ``to`` shares, the route's own upstream the rest."""

    to: list[SplitTo] = Field(default_factory=list)
    force: list[ForceRule] = Field(default_factory=list, description="first matching rule wins")
    sticky: str | None = Field(
        None, description="cookie:NAME | consumer | header:NAME | ip; none = per request"
    )

    @field_validator("sticky")
    @classmethod
    def _sticky(cls, v: str | None) -> str | None:
        if v is None or v in ("ip", "consumer") or re.fullmatch(rf"(cookie|header):{_NAME}", v):
            return v
        raise ValueError("sticky must be cookie:NAME, consumer, header:NAME or ip")

    @model_validator(mode="after")
    def _total(self) -> SplitConfig:
        total = sum(round(t.percent * 100) for t in self.to)
        if total > BUCKETS:
            raise ValueError(f"split percents add up to {total / 100:g} (more than 100)")
        names = [t.upstream for t in self.to]
        if len(set(names)) != len(names):
            raise ValueError("an upstream appears twice in split.to")
        return self


class MirrorConfig(_Model):
    """Fire-and-forget copies to a shadow upstream; its answers are discarded."""

    upstream: str = Field(description="shadow upstream")
    sample: float = Field(1.0, ge=0, le=1, description="fraction of requests copied")
    max_in_flight: int = Field(50, ge=1, description="copies in flight; beyond: dropped")
    max_body_bytes: Size = Field(
        64 * 1024, description="bodies up to this size are copied; larger ones: dropped"
    )


class FallbackConfig(_Model):
    """Strangler fig: the route's upstream first, ``upstream`` when it answers a listed
    status or cannot be reached."""

    upstream: str = Field(description="upstream that serves what the first one does not")
    on: list[int] = Field(
        default_factory=lambda: [404], description="statuses of the first answer that fall back"
    )
    max_body_bytes: Size = Field(
        64 * 1024, description="request bodies up to this size are held so they can be resent"
    )

    @field_validator("on")
    @classmethod
    def _on(cls, v: list[int]) -> list[int]:
        for s in v:
            if not 200 <= s <= 599:
                raise ValueError(f"fallback status {s} is not a final status (200-599)")
        return v


class VersionConfig(_Model):
    upstream: str = Field(description="upstream serving this version")
    deprecated: bool | dt.date = Field(
        False, description="true, or the date it was deprecated (Deprecation header, RFC 9745)"
    )
    sunset: dt.date | dt.datetime | None = Field(
        None, description="when it stops working (Sunset header, RFC 8594)"
    )
    link: str | None = Field(None, description="URL of migration docs, sent as a Link header")

    @field_validator("link")
    @classmethod
    def _link(cls, v: str | None) -> str | None:
        if v is not None and (not re.fullmatch(r"[\x21-\x7e]+", v) or any(c in v for c in "<>")):
            raise ValueError("link must be a URL without spaces, controls, '<' or '>'")
        return v


class VersionsConfig(_Model):
    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True
    )

    from_: str = Field(
        alias="from",
        description="header:NAME | query:NAME | path (/v1/...) | accept (vnd.x.v1+json)",
    )
    default: str | None = Field(None, description="version of requests that name none")
    map: dict[str, VersionConfig] = Field(description="version → upstream and lifecycle")

    @field_validator("from_")
    @classmethod
    def _from(cls, v: str) -> str:
        if v in ("path", "accept") or re.fullmatch(rf"(header|query):{_NAME}", v):
            return v
        raise ValueError("from must be header:NAME, query:NAME, path or accept")

    @field_validator("map", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): x for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _default(self) -> VersionsConfig:
        if not self.map:
            raise ValueError("versions.map needs at least one version")
        if self.default is not None and self.default not in self.map:
            raise ValueError(f"default version {self.default!r} is not in map")
        return self


def referenced_upstreams(route: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """``(path under the route, upstream name)`` of every upstream the traffic keys of a raw
    route mapping name (for the loader's reference check)."""
    out: list[tuple[tuple[Any, ...], str]] = []

    def add(path: tuple[Any, ...], v: Any) -> None:
        if isinstance(v, str):
            out.append((path, v))

    split = route.get("split")
    if isinstance(split, dict):
        for key in ("to", "force"):
            items = split.get(key)
            if isinstance(items, list):
                for i, t in enumerate(items):
                    if isinstance(t, dict):
                        add(("split", key, i, "upstream"), t.get("upstream"))
    for key in ("mirror", "fallback"):
        m = route.get(key)
        if isinstance(m, dict):
            add((key, "upstream"), m.get("upstream"))
    versions = route.get("versions")
    if isinstance(versions, dict) and isinstance(versions.get("map"), dict):
        for ver, vc in versions["map"].items():
            if isinstance(vc, dict):
                add(("versions", "map", ver, "upstream"), vc.get("upstream"))
    return out

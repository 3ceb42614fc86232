"""Header edits in Kong's order: remove, rename, replace, add, append."""

from __future__ import annotations

import logging
import re
from typing import Any, Final

from pydantic import Field, PrivateAttr, field_validator

from portway.http.headers import Headers
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import PluginConfig
from portway.plugins._transform.template import Template, compile_template

log: Final = logging.getLogger("portway.plugins")

#: framing and hop-by-hop fields are the gateway's job: editing them would desync framing
#: or smuggle requests (RFC 9110 §7.6.1, RFC 9112 §6); Host is set by routing/preserve_host
FORBIDDEN: Final = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "host",
    }
)
FIELD_NAME: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.1 field-name
BAD_VALUE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs but HTAB (RFC 9110 §5.5)


def check_name(k: str) -> str:
    if not FIELD_NAME.match(k):
        raise ValueError(f"invalid header name {k!r}")
    if k.lower() in FORBIDDEN:
        raise ValueError(f"header {k!r} is managed by the gateway and cannot be edited")
    return k


class HeaderRules(PluginConfig):
    """Applied in this order: ``remove``, ``rename``, ``replace`` (only fields that exist),
    ``add`` (only when the field is absent), ``append`` (always another field). Names are
    case-insensitive; values may be templates (``{consumer.username}``); a value that renders
    empty is not written."""

    remove: list[str] = Field(default_factory=list, description="delete every field of a name")
    rename: dict[str, str] = Field(default_factory=dict, description="old name -> new name")
    replace: dict[str, str] = Field(default_factory=dict, description="overwrite when present")
    add: dict[str, str] = Field(default_factory=dict, description="set when absent")
    append: dict[str, str] = Field(default_factory=dict, description="add another field")

    _tpl: dict[str, Template] = PrivateAttr(default_factory=dict)

    @field_validator("remove")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for k in v:
            check_name(k)
        return [k.lower() for k in v]

    @field_validator("rename")
    @classmethod
    def _renames(cls, v: dict[str, str]) -> dict[str, str]:
        for old, new in v.items():
            check_name(old)
            check_name(new)
        return {k.lower(): n.lower() for k, n in v.items()}

    @field_validator("replace", "add", "append")
    @classmethod
    def _values(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            check_name(k)
            if BAD_VALUE.search(val):
                raise ValueError(f"header {k!r}: value contains CR, LF, NUL or another CTL")
            compile_template(val)
        return {k.lower(): val for k, val in v.items()}

    def model_post_init(self, context: Any, /) -> None:
        self._tpl = {
            v: compile_template(v)
            for d in (self.replace, self.add, self.append)
            for v in d.values()
        }

    @property
    def empty(self) -> bool:
        return not (self.remove or self.rename or self.replace or self.add or self.append)

    def _render(self, value: str, ctx: RequestContext | None) -> str | None:
        t = self._tpl[value]
        if ctx is None or t.constant:
            return value
        out = t.render(ctx)
        if BAD_VALUE.search(out):
            # a claim or header value with a CTL must never reach a header block
            log.warning("header template %r rendered a value with a CTL: not written", value)
            return None
        # Headers encode values as latin-1: send a claim's UTF-8 bytes as they are
        return out.encode("utf-8").decode("latin-1") if out else None

    def apply(self, h: Headers, ctx: RequestContext | None = None) -> None:
        if self.remove:
            h.remove_many([k.encode() for k in self.remove])
        for old, new in self.rename.items():
            h.rename(old, new)
        for k, v in self.replace.items():
            if k in h:
                out = self._render(v, ctx)
                if out is not None:
                    h.set(k, out)
        for k, v in self.add.items():
            if k not in h:
                out = self._render(v, ctx)
                if out is not None:
                    h.add(k, out)
        for k, v in self.append.items():
            out = self._render(v, ctx)
            if out is not None:
                h.add(k, out)

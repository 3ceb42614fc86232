"""Value templates: ``"/v2{path}"``, ``"{consumer.username}"``, ``"{header.x-org}"``.

Placeholders: ``{path}`` (the path being forwarded), ``{params.NAME}`` (a route capture, raw),
``{consumer.id|username|credential|groups|scopes}``, ``{consumer.claims.NAME}``,
``{header.NAME}`` (the client's request header), ``{query.NAME}`` (the client's query
argument). A placeholder with no value renders as ``""``. Templates are compiled once at load;
an unknown placeholder is a config error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl

from portway.pipeline.context import RequestContext

_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\.([^{}\s]+))?\}")
_CONSUMER_ATTRS: Final = frozenset({"id", "username", "credential", "groups", "scopes"})

#: a compiled part: a literal string, or (kind, name)
Part = str | tuple[str, str]


@dataclass(frozen=True, slots=True)
class Template:
    text: str
    parts: tuple[Part, ...]

    @property
    def constant(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    def render(
        self,
        ctx: RequestContext,
        path: str | None = None,
        escape: Callable[[str, str], str] | None = None,
    ) -> str:
        """Render for ``ctx``; ``escape(kind, value)`` encodes substituted values for where
        the result goes (a path, a query); ``path`` overrides ``{path}``."""
        if self.constant:
            return self.text
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            kind, name = part
            value = _value(ctx, kind, name, path)
            out.append(escape(kind, value) if escape is not None else value)
        return "".join(out)


def _check(kind: str, name: str | None, text: str) -> None:
    if kind == "path":
        if name is not None:
            raise ValueError(f"template {text!r}: {{path}} takes no name")
        return
    if kind not in ("params", "header", "query", "consumer") or not name:
        raise ValueError(
            f"template {text!r}: unknown placeholder {{{kind}{'.' + name if name else ''}}}; "
            "use {path}, {params.NAME}, {consumer.ATTR}, {header.NAME} or {query.NAME}"
        )
    if kind == "consumer" and name not in _CONSUMER_ATTRS and not name.startswith("claims."):
        raise ValueError(
            f"template {text!r}: {{consumer.{name}}} is not a consumer attribute "
            f"({', '.join(sorted(_CONSUMER_ATTRS))} or claims.NAME)"
        )


def compile_template(text: str, strict: bool = True) -> Template:
    """Compile ``text``. With ``strict=False`` (JSON string values) braces that do not form
    a known placeholder stay literal instead of being an error."""
    parts: list[Part] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        kind, name = m.group(1), m.group(2)
        try:
            _check(kind, name, text)
        except ValueError:
            if strict:
                raise
            continue
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        parts.append((kind, name or ""))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    return Template(text, tuple(parts))


def _value(ctx: RequestContext, kind: str, name: str, path: str | None) -> str:
    if kind == "path":
        return path if path is not None else ctx.upstream_request.path
    if kind == "params":
        return ctx.params.get(name, "")
    if kind == "header":
        return ctx.request.headers.get(name.lower()) or ""
    if kind == "query":
        for k, v in parse_qsl(ctx.request.query.decode("latin-1"), keep_blank_values=True):
            if k == name:
                return v
        return ""
    c = ctx.consumer
    if c is None or (c.anonymous and name != "username"):
        return ""
    if name.startswith("claims."):
        claim = c.claims.get(name[7:])
        return "" if claim is None else str(claim)
    if name in ("groups", "scopes"):
        return ",".join(sorted(c.groups if name == "groups" else c.scopes))
    v = getattr(c, name)
    return "" if v is None else str(v)

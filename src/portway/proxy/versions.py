"""API version routing: which upstream serves the version a request asks for.

The version is read from one source (``versions.from``): a header, a query parameter, the
first path segment (``/v1/...``) or the Accept media type (``application/vnd.acme.v1+json``,
or a ``version=1`` parameter). ``v1`` and ``1`` name the same version. A request naming no
version gets ``default``; one naming an unknown version (or none, without a default) is
answered 400 with the known versions listed. Deprecated or sunset versions answer with
``Deprecation`` (RFC 9745), ``Sunset`` (RFC 8594) and, when ``link`` is set, ``Link``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote_to_bytes

import orjson

from portway.config.traffic import VersionConfig, VersionsConfig
from portway.errors import BadRequestError
from portway.pipeline.context import RequestContext

if TYPE_CHECKING:
    from portway.runtime.graph import RouteRuntime

_PATH_VERSION: Final = re.compile(r"^/[vV]([0-9][0-9A-Za-z_.-]*)(?:/|$)")
_ACCEPT_VND: Final = re.compile(r"vnd\.[^\s,;]*?\.v([0-9][0-9A-Za-z_-]*)(?=[+\s,;]|$)")
_ACCEPT_PARAM: Final = re.compile(r";\s*version=\"?([0-9A-Za-z_.-]+)")


class UnknownVersionError(BadRequestError):
    """400 whose JSON body also lists the versions the route knows."""

    code = "unknown_version"

    def __init__(self, message: str, known: list[str]) -> None:
        super().__init__(message)
        self.known = known

    def body(self, request_id: str | None) -> bytes:
        return orjson.dumps(
            {
                "error": self.message,
                "code": self.code,
                "status": self.status,
                "request_id": request_id,
                "versions": self.known,
            }
        )


def _epoch(d: dt.date | dt.datetime) -> int:
    if isinstance(d, dt.datetime):
        return int((d if d.tzinfo else d.replace(tzinfo=dt.UTC)).timestamp())
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())


def lifecycle_headers(v: VersionConfig) -> list[tuple[str, str]]:
    """The response fields of a version: Deprecation (``@epoch``; ``true`` without a date is
    sent as ``@0``, "already deprecated"), Sunset (an HTTP-date) and Link."""
    out: list[tuple[str, str]] = []
    dep = v.deprecated
    if dep is not False:
        out.append(("deprecation", f"@{0 if dep is True else _epoch(dep)}"))
    if v.sunset is not None:
        # imported here: the email package costs ~0.5 MB of RSS in every worker, and only a
        # version with a sunset date formats one (once, when the route is built)
        from email.utils import format_datetime

        when = dt.datetime.fromtimestamp(_epoch(v.sunset), dt.UTC)
        out.append(("sunset", format_datetime(when, usegmt=True)))
    if v.link is not None and out:
        rels = []
        if dep is not False:
            rels.append(f'<{v.link}>; rel="deprecation"; type="text/html"')
        if v.sunset is not None:
            rels.append(f'<{v.link}>; rel="sunset"; type="text/html"')
        out.append(("link", ", ".join(rels)))
    return out


class VersionRouter:
    """Maps a request to ``(version, route runtime, response fields)``."""

    def __init__(self, cfg: VersionsConfig, variants: Callable[[str], RouteRuntime]) -> None:
        self.source = cfg.from_
        kind, _, name = cfg.from_.partition(":")
        self.kind = kind
        self.name = name.lower().encode() if kind == "header" else name.encode()
        self.default = cfg.default
        self.known = sorted(cfg.map)
        self.by_version: dict[str, tuple[str, RouteRuntime, list[tuple[str, str]]]] = {
            ver: (vc.upstream, variants(vc.upstream), lifecycle_headers(vc))
            for ver, vc in cfg.map.items()
        }

    def requested(self, ctx: RequestContext) -> str | None:
        """The version the request names, as written (``None``: it names none)."""
        req = ctx.request
        kind = self.kind
        if kind == "header":
            v = req.headers.get_raw(self.name)
            return v.decode("latin-1").strip() if v else None
        if kind == "query":
            for part in req.query.split(b"&"):
                k, _, val = part.partition(b"=")
                if unquote_to_bytes(k.replace(b"+", b" ")) == self.name:
                    raw = unquote_to_bytes(val.replace(b"+", b" ")).decode("latin-1").strip()
                    return raw or None
            return None
        if kind == "path":
            m = _PATH_VERSION.match(req.path)
            return m.group(1) if m else None
        accept = req.headers.get_raw(b"accept")
        if not accept:
            return None
        text = accept.decode("latin-1")
        m = _ACCEPT_VND.search(text) or _ACCEPT_PARAM.search(text)
        return m.group(1) if m else None

    def choose(self, ctx: RequestContext) -> tuple[str, str, RouteRuntime, list[tuple[str, str]]]:
        """``(version, upstream name, route runtime, response fields)``; raises
        :class:`UnknownVersionError`."""
        asked = self.requested(ctx)
        ver = asked if asked is not None else self.default
        if ver is None:
            raise UnknownVersionError(
                f"no API version given (from {self.source}); known: {', '.join(self.known)}",
                self.known,
            )
        hit = self.by_version.get(ver)
        if hit is None and ver[:1] in ("v", "V"):
            ver = ver[1:]
            hit = self.by_version.get(ver)
        if hit is None:
            shown = ver if len(ver) <= 64 else ver[:64] + "…"
            raise UnknownVersionError(
                f"unknown API version {shown!r}; known: {', '.join(self.known)}", self.known
            )
        return ver, hit[0], hit[1], hit[2]

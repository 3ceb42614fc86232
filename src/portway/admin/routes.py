"""Admin API resource patterns: ``AdminRoute("/consumers/{username}", {"GET": handler})``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from portway.http.models import Response

Handler = Callable[..., Awaitable[Response]]


class AdminRoute:
    """One resource pattern: literal segments, ``{name}`` (one segment) and, last only,
    ``{name:path}`` (the rest of the path, ``/`` included — cache keys are ``route/hash``)."""

    __slots__ = ("handlers", "parts", "rest")

    def __init__(self, pattern: str, handlers: dict[str, Handler]) -> None:
        parts = pattern.strip("/").split("/")
        self.rest = parts[-1].endswith(":path}")
        self.parts: tuple[str | None, ...] = tuple(None if p.startswith("{") else p for p in parts)
        self.handlers = handlers

    def match(self, segs: list[str]) -> list[str] | None:
        n = len(self.parts)
        if len(segs) != n and not (self.rest and len(segs) > n):
            return None
        if self.rest and len(segs) > n:
            segs = [*segs[: n - 1], "/".join(segs[n - 1 :])]
        params: list[str] = []
        for want, got in zip(self.parts, segs, strict=True):
            if want is None:
                if not got:
                    return None
                params.append(unquote(got))
            elif want != got:
                return None
        return params

    def allow(self) -> str:
        methods = set(self.handlers)
        if "GET" in methods:
            methods.add("HEAD")
        return ", ".join(sorted(methods | {"OPTIONS"}))

"""The per-request work of ``request_id``, as :class:`SyncHooks` (compiled with mypyc,
setup.py ``HOT_MODULES``).

Generated ids are 16 random bytes as 32 hex digits, as before, but taken from a 4 KiB block
read from ``os.urandom`` once per 256 ids instead of one ``getrandom`` call per request. The
block is hex-encoded once when read, so an id is one slice of it (not a slice, a ``hex()``
and an ``encode()`` per request). The block is dropped in a forked child
(``os.register_at_fork``), so two workers never hand out the same ids.
"""

from __future__ import annotations

import os
import re
from typing import Final

from portway.http.forwarding import plain_lines
from portway.http.headers import Headers
from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.runner import FieldHooks, Replaces

SAFE: Final = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
#: random bytes read at once (256 ids)
BLOCK: Final = 4096


class _Random:
    """Unused random bytes of the current block, as lowercase hex digits."""

    def __init__(self) -> None:
        self.block = b""
        self.pos = 0

    def take32hex(self) -> bytes:
        """32 hex digits of 16 fresh random bytes."""
        pos = self.pos
        block = self.block
        if pos + 32 > len(block):
            block = self.block = os.urandom(BLOCK).hex().encode()
            pos = 0
        self.pos = pos + 32
        return block[pos : pos + 32]

    def drop(self) -> None:
        self.block = b""
        self.pos = 0


_RANDOM: Final = _Random()
os.register_at_fork(after_in_child=_RANDOM.drop)


def new_id() -> bytes:
    """A fresh id: 32 lowercase hex digits of 16 random bytes."""
    return _RANDOM.take32hex()


class RequestIdHooks(FieldHooks):
    """Accept (``trust``) or generate the id, forward it; echo it on the response (``echo``)."""

    def __init__(self, name: bytes, trust: bool, echo: bool) -> None:
        self.name = name
        self.trust = trust
        self.echo = echo
        #: the echoed id replaces any field of that name (the upstream's)
        self.replaces = Replaces((name,))
        #: the upstream request's edit: this name goes (the client's), the id comes
        self.drop = frozenset((name,))
        #: ``name: `` when the forwarding rules pass the field as it is (the id's line is
        #: then handed serialised with the edit), else None
        self.prefix: bytes | None = name + b": " if plain_lines([(name, b"")]) is not None else None

    def request(self, ctx: RequestContext) -> Response | None:
        name = self.name
        rid = ctx.request.headers.get_raw(name) if self.trust else None
        if rid is None or SAFE.match(rid) is None:
            rid = new_id()
        ctx.request_id = rid.decode()
        req = ctx.request
        up = ctx.upstream_unedited
        if up is req:
            # (``copies_on_edit``) no copy: the client's fields without the name, then the
            # id (``RequestContext.edit_upstream_fields``: the head writer applies it)
            prefix = self.prefix
            lines = b"".join((prefix, rid, b"\r\n")) if prefix is not None else None
            ctx.edit_upstream_fields(self.drop, [(name, rid)], lines)
            return None
        h = up.headers
        _drop(h, name)
        h.add_raw(name, rid)
        return None

    def sets_request_id(self) -> bool:
        return True

    def replaces_names(self) -> frozenset[bytes] | None:
        return self.replaces.names

    def fresh_fields(self) -> bool:
        # a new ``(name, id)`` tuple per response
        return True

    def response_fields(
        self, ctx: RequestContext, out: list[tuple[bytes, bytes]]
    ) -> Replaces | None:
        rid = ctx.request_id
        if not self.echo or not rid:
            return None
        out.append((self.name, rid.encode()))
        return self.replaces


def _drop(h: Headers, name: bytes) -> None:
    # a scan, and a rebuild of the list only when the field is there (rarely, upstream)
    for k, _ in h.raw():
        if k == name:
            h.remove(name)
            return

"""A pure-Python RESP2 reply reader: what :class:`~portway.state.resp.ScriptPipe` reads
with when hiredis is not installed (hiredis' ``Reader`` interface)."""

from __future__ import annotations

from typing import Any


class RespProtocolError(Exception):
    """Bytes that are not RESP (what hiredis calls ``ProtocolError``)."""


class RespReplyError(Exception):
    """An error reply (``-ERR ...``), returned as a value as hiredis' ``ReplyError`` is."""


class _Incomplete(Exception):
    pass


class RespReader:
    """A RESP2 reply reader with hiredis' ``Reader`` interface (``feed``; ``gets`` returns a
    reply or False while it is incomplete): status replies and bulk strings as bytes,
    integers as int, arrays as lists, nil as None, error replies as
    :class:`RespReplyError` values. Used when hiredis is not installed."""

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0
        else:
            self._buf += data

    def gets(self) -> Any:
        try:
            value, pos = self._parse(self._pos)
        except _Incomplete:
            return False
        self._pos = pos
        return value

    def _parse(self, pos: int) -> tuple[Any, int]:
        buf = self._buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            raise _Incomplete
        if end == pos:
            raise RespProtocolError("empty RESP line")
        kind = buf[pos]
        line = buf[pos + 1 : end]
        pos = end + 2
        try:
            if kind == 58:  # ':' integer
                return int(line), pos
            if kind == 36:  # '$' bulk string
                n = int(line)
                if n < 0:
                    return None, pos
                if len(buf) < pos + n + 2:
                    raise _Incomplete
                return buf[pos : pos + n], pos + n + 2
            if kind == 42:  # '*' array
                n = int(line)
                if n < 0:
                    return None, pos
                items: list[Any] = []
                for _ in range(n):
                    item, pos = self._parse(pos)
                    items.append(item)
                return items, pos
        except ValueError as e:
            raise RespProtocolError(f"bad RESP length or integer: {line[:40]!r}") from e
        if kind == 43:  # '+' status
            return line, pos
        if kind == 45:  # '-' error
            return RespReplyError(line.decode("utf-8", "replace")), pos
        raise RespProtocolError(f"unknown RESP type byte {kind!r}")

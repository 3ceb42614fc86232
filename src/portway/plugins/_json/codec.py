"""JSON decode/encode for bodies that are rewritten and sent on.

orjson is fast but reads integers beyond 64 bits as floats (``123456789012345678901234``
would come back as ``1.2345678901234568e+23``): a rewrite must never change values it was
not asked to touch. A body holding a run of 19+ digits (a cheap C-level scan; a string of
digits also triggers it) is therefore decoded and encoded with the standard library, which
keeps integers exact.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

_LONG_NUMBER: Final = re.compile(rb"[0-9]{19,}")


class JsonCodecError(ValueError):
    """The bytes are not JSON (or hold a number no JSON parser here can represent)."""


def loads(data: bytes) -> tuple[Any, bool]:
    """(document, exact): ``exact`` says the stdlib decoded it (encode it with :func:`dumps`
    passing the same flag)."""
    if _LONG_NUMBER.search(data) is None:
        try:
            return orjson.loads(data), False
        except orjson.JSONDecodeError as e:
            raise JsonCodecError(str(e)) from None
    try:
        doc = json.loads(data, parse_constant=_reject)
    except (ValueError, RecursionError) as e:
        raise JsonCodecError(str(e)) from None
    return doc, True


def dumps(doc: Any, exact: bool) -> bytes:
    if not exact:
        return orjson.dumps(doc)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _reject(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")

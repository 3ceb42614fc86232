"""Request ids for answers the gateway writes itself.

Every error body carries a ``request_id`` (DESIGN §4: errors are JSON with status, code and
id), including the ones written before any plugin ran — a malformed request refused by the
parser, a timed-out head, an HTTP/2 stream refused on arrival. The client's own
``X-Request-ID`` is kept when it is well-formed (the ``request_id`` plugin's rule), so a
client can find its failed request in the gateway's logs; otherwise a random one is made.
"""

from __future__ import annotations

import os
from typing import Final

#: characters of a well-formed incoming id (the ``request_id`` plugin accepts the same)
RID_OK: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


def new_request_id() -> str:
    return os.urandom(16).hex()


def well_formed(rid: bytes | None) -> bool:
    return rid is not None and 0 < len(rid) <= 128 and RID_OK.issuperset(rid)


def request_id_of(fields: list[tuple[bytes, bytes]]) -> str:
    """The id for an answer to a request whose (lower-cased) header ``fields`` are these,
    possibly incomplete: the client's well-formed X-Request-ID, else a new one."""
    for k, v in fields:
        if k == b"x-request-id":
            if well_formed(v):
                return v.decode("ascii")
            break
    return new_request_id()

"""Rules for forwarding a client's request upstream: one copy, every path and protocol.

The general path (``proxy/forward.py``), the task-free path (``proxy/fast.py``), the tunnel
and HTTP/2 requests (which reach the forwarder as :class:`Request` objects like any other) all
build the upstream request's fields here. The task-free path is faster through *how* it calls
the rules (:func:`forward_header_lines` writes the usual request straight into bytes and
remembers the added fields per connection), never through a second copy of them.

- Hop-by-hop fields (RFC 9110 §7.6.1) never cross; the fields a client's ``Connection``
  value names are removed as the request is read (``http/serverparse.py``: so a hook's field
  of such a name is never taken for the client's, and Host never goes); neither do Expect
  (answered by the gateway), Content-Length (rewritten from the body), ``X-Portway-Debug``
  and ``HTTP2-Settings``.
- X-Forwarded-For/-Proto/-Host/-Port and X-Real-IP are added; from untrusted peers the
  client's own forwarding fields are dropped first (``http/forwarded.py`` says who is trusted).
- Via (RFC 9110 §7.6.3): the received protocol of the client hop and the gateway's name.
- Host: the client's, or the target's when the route does not preserve it (``new_host``).
- X-Forwarded-Prefix: the prefix ``strip_prefix`` removed (:func:`with_forwarded_prefix`).
- Framing: Content-Length of a known-length body, else chunked; ``Content-Length: 0`` for a
  bodiless POST/PUT/PATCH (:func:`needs_zero_length`), which some servers require.
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import i64

from portway.http.forwarded import ForwardMemo
from portway.http.headers import HOP_BY_HOP, PLAIN_CONNECTION
from portway.http.memo import remember
from portway.http.models import Request
from portway.http.wire import append_fields

#: RFC 9110 §7.6.3 received-protocol of the client hop
_VIA_PROTO: Final = {"1.1": b"1.1 ", "1.0": b"1.0 ", "2": b"2 ", "3": b"3 "}
#: methods whose bodiless requests carry ``Content-Length: 0``
_NEEDS_LENGTH: Final = frozenset({"POST", "PUT", "PATCH"})
#: http2-settings: RFC 7540 §3.2.1 connection-specific, meaningful only with "Upgrade: h2c",
#: which is never forwarded (http/upgrade.py)
_ALWAYS_DROP: Final = HOP_BY_HOP | {
    b"expect",
    b"x-portway-debug",
    b"content-length",
    b"http2-settings",
}
_FORWARDED: Final = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"forwarded",
    }
)
_DROP_UNTRUSTED: Final = _ALWAYS_DROP | _FORWARDED
# fields the single pass below rewrites rather than copies
_REWRITTEN: Final = frozenset({b"x-forwarded-for", b"via"})


class _Scan:
    """One pass over the client's fields (see :func:`_scan`): what is kept, and what the
    added fields depend on."""

    __slots__ = (
        "has_port",
        "has_real",
        "has_xfh",
        "has_xfp",
        "host",
        "kept",
        "prior",
        "upgrade",
        "via",
    )

    def __init__(self, kept: list[tuple[bytes, bytes]]) -> None:
        self.kept = kept
        self.upgrade: bytes | None = None
        self.prior: list[bytes] | None = None
        self.via: bytes | None = None
        self.host: bytes | None = None
        self.has_xfp = False
        self.has_xfh = False
        self.has_port = False
        self.has_real = False


def _scan(req: Request, raw: list[tuple[bytes, bytes]], new_host: bytes | None) -> _Scan:
    """The client's fields minus hop-by-hop ones, Content-Length and, from untrusted peers,
    X-Forwarded-*; prior X-Forwarded-For and Via values set aside to be merged. (The fields
    the client's ``Connection`` names left its request as it was read: a field of such a
    name here is a hook's, and goes upstream.)"""
    drop = _ALWAYS_DROP if req.trusted_peer else _DROP_UNTRUSTED
    sc = _Scan([] if new_host is None else [(b"host", new_host)])
    kept = sc.kept
    for kv in raw:
        k = kv[0]
        if k in drop:
            if k == b"upgrade":
                sc.upgrade = kv[1]
            continue
        if k in _REWRITTEN:
            v = kv[1]
            if k == b"via":
                sc.via = v if sc.via is None else sc.via + b", " + v
            else:
                if sc.prior is None:
                    sc.prior = []
                sc.prior.append(v)
            continue
        if k == b"host":
            sc.host = kv[1]
            if new_host is not None:
                continue
        elif k == b"x-forwarded-proto":
            sc.has_xfp = True
        elif k == b"x-forwarded-host":
            sc.has_xfh = True
        elif k == b"x-forwarded-port":
            sc.has_port = True
        elif k == b"x-real-ip":
            sc.has_real = True
        kept.append(kv)  # the client's own pair: no new tuple
    return sc


def _added(req: Request, sc: _Scan, via_name: bytes | None) -> list[tuple[bytes, bytes]]:
    """X-Forwarded-For/-Proto/-Host/-Port, X-Real-IP, Via (and the upgrade pair)."""
    out: list[tuple[bytes, bytes]] = []
    peer = req.peer_ip.encode()
    prior = sc.prior
    out.append((b"x-forwarded-for", b", ".join([*prior, peer]) if prior else peer))
    if not sc.has_xfp:
        out.append((b"x-forwarded-proto", b"https" if req.scheme == "https" else b"http"))
    if not sc.has_xfh and sc.host is not None:
        out.append((b"x-forwarded-host", sc.host))
    if not sc.has_port and req.server_port:
        out.append((b"x-forwarded-port", str(req.server_port).encode()))
    if not sc.has_real:
        out.append((b"x-real-ip", req.client_ip.encode()))
    via = sc.via
    if via_name is not None:
        mine = _VIA_PROTO.get(req.version, b"1.0 ") + via_name
        out.append((b"via", via + b", " + mine if via else mine))
    elif via is not None:
        out.append((b"via", via))
    if sc.upgrade is not None and req.upgrade:
        out.append((b"connection", b"upgrade"))
        out.append((b"upgrade", sc.upgrade))
    return out


def forward_header_items(
    req: Request,
    raw: list[tuple[bytes, bytes]],
    via_name: bytes | None,
    new_host: bytes | None = None,
) -> list[tuple[bytes, bytes]]:
    """The fields to send upstream, from the client's ``raw`` list: hop-by-hop fields,
    Content-Length and, from untrusted peers, X-Forwarded-*
    dropped; X-Forwarded-For/-Proto/-Host/-Port, X-Real-IP and Via added. No framing.
    ``new_host`` replaces the client's Host (which still feeds X-Forwarded-Host), first."""
    sc = _scan(req, raw, new_host)
    items = sc.kept
    items.extend(_added(req, sc, via_name))
    return items


def forward_header_lines(
    req: Request,
    raw: list[tuple[bytes, bytes]],
    via_name: bytes | None,
    new_host: bytes | None,
    parts: list[bytes],
    memo: ForwardMemo | None = None,
    drop: frozenset[bytes] | None = None,
    add: list[tuple[bytes, bytes]] | None = None,
    add_lines: bytes | None = None,
) -> None:
    """:func:`forward_header_items` serialised: appends ``name: value CRLF`` pieces to
    ``parts`` (the task-free path's request head). ``memo``: the client connection's own
    memo of the added fields (see :class:`ForwardMemo`). ``drop`` / ``add``: a field edit a
    hook left pending (``RequestContext.edit_upstream_fields``), applied here as the fields
    are written — the fields are ``raw`` minus those named in ``drop``, then ``add``;
    ``add_lines``: ``add`` serialised, when :func:`plain_lines` gave it.

    The usual request (no Via, no forwarding fields to keep, no Upgrade, a plain Connection
    value) is written in one pass with no field list, and the added fields, which then
    depend only on the connection, Host and version, come from remembered bytes (bounded).
    Anything else is undone and written by the general :func:`_scan`."""
    start = len(parts)
    if new_host is not None:
        parts.append(_HOST_LINE.line(new_host))
    trusted = req.trusted_peer
    plain = True
    host: bytes | None = None
    for kv in raw:
        k = kv[0]
        if k in _LOOK:
            if drop is not None and k in drop:
                continue
            if k == b"host":
                host = kv[1]
                if new_host is not None:
                    continue
            elif _unusual(k, kv[1], trusted):
                plain = False
                break
            else:
                continue  # Connection, hop-by-hop, Content-Length, Expect, X-Forwarded-*
        elif drop is not None and k in drop:
            continue
        parts.append(k)
        parts.append(b": ")
        parts.append(kv[1])
        parts.append(b"\r\n")
    if plain and add is not None:
        if add_lines is not None:
            parts.append(add_lines)  # (no name the rules look at: plain_lines)
        else:
            for kv in add:
                k = kv[0]
                if k in _LOOK:
                    if k == b"host":
                        host = kv[1]
                        if new_host is not None:
                            continue
                    elif _unusual(k, kv[1], trusted):
                        plain = False
                        break
                    else:
                        continue
                parts.append(k)
                parts.append(b": ")
                parts.append(kv[1])
                parts.append(b"\r\n")
    if not plain:
        del parts[start:]
        if add is not None:
            items = [kv for kv in raw if kv[0] not in drop] if drop is not None else list(raw)
            items.extend(add)
            raw = items
        sc = _scan(req, raw, new_host)
        append_fields(parts, sc.kept)
        append_fields(parts, _added(req, sc, via_name))
        return
    _append_tail(req, host, via_name, parts, memo)


def _unusual(k: bytes, v: bytes, trusted: bool) -> bool:
    """The usual-request rule for a field named in ``_LOOK`` other than Host, shared by
    :func:`forward_header_lines` and :func:`forward_lite_lines`: True when the field makes
    the request one the general :func:`_scan` must write (Via, Upgrade, a field named
    ``close``, trusted forwarding fields, a Connection naming fields); False when the
    usual request just leaves it out (a plain Connection, the other hop-by-hop fields,
    Content-Length, Expect, untrusted X-Forwarded-*)."""
    if k in _NOT_PLAIN or (trusted and k in _FORWARDED):
        return True
    return k == b"connection" and v not in PLAIN_CONNECTION


def forward_lite_lines(
    req: Request,
    via_name: bytes | None,
    new_host: bytes | None,
    parts: list[bytes],
    memo: ForwardMemo | None,
    drop: frozenset[bytes] | None,
    add: list[tuple[bytes, bytes]] | None,
    add_lines: bytes | None,
) -> bool:
    """What :func:`forward_header_lines` appends for ``req.headers``, for a request the
    lite parser read (``req.lite_head``, see :class:`Request`), with the client's own field
    lines copied as runs of the bytes it sent rather than written field by field: the Host
    line (the client's value, or ``new_host``), then the lines after it minus those the
    rules drop (a plain ``Connection``, hop-by-hop fields, untrusted X-Forwarded-*) or
    ``drop`` names, then the edit's ``add_lines`` and the added fields. The lines keep the
    client's spelling of names and OWS (RFC 9110 §5.1, §5.6.3: neither is meaningful);
    names, values and order are :func:`forward_header_lines`' (tests/proxy/
    test_lite_forward.py). Headers left unread (``Headers.unread``) stay unread unless a
    line is to be cut.

    Returns False, with ``parts`` as it was, when the request is not one it writes: a field
    that makes the request unusual (Via, Upgrade, a Connection naming fields, trusted
    forwarding fields), ``drop`` naming Host, an ``add`` without ``add_lines``, or a line to
    cut when the lines are not all ``name: value CRLF`` (whose lengths are then known)."""
    head = req.lite_head
    if head is None or (add is not None and add_lines is None):
        return False
    h = req.headers
    n = req.lite_n
    if n >= 0 and len(h.raw()) != n:
        return False  # (the client's field list was edited in place)
    code = req.lite_at
    at = code >> 2
    end = len(head) - 2
    host = req.lite_host
    if host is None:
        return False  # (not reached: a lite head's first field is its Host)
    start = len(parts)
    parts.append(_HOST_LINE.line(host if new_host is None else new_host))
    if code & 1 == 0 and drop is None:
        parts.append(head[at:end])  # (no line to cut: the usual request)
    else:
        # ``drop``'s filter: most fresh names are told apart without a hash (a lookup)
        few = None if drop is None else _DROPS.of(drop)
        if code & 2 == 0 or (drop is not None and _dropped(b"host", drop, few)):
            del parts[start:]
            return False
        raw = h.raw()
        trusted = req.trusted_peer
        # bit 0 clear: the scan saw no field but Host that ``_LOOK`` names (no lookup then)
        look = code & 1 != 0
        keep = at  # the start of the run being kept
        pos = at  # the start of field ``i``'s line
        for i in range(1, len(raw)):
            kv = raw[i]
            k = kv[0]
            size = len(k) + len(kv[1]) + 4
            if look and k in _LOOK:
                if (drop is None or not _dropped(k, drop, few)) and _unusual(k, kv[1], trusted):
                    del parts[start:]
                    return False
            elif drop is None or not _dropped(k, drop, few):
                pos += size
                continue
            if pos > keep:
                parts.append(head[keep:pos])
            pos += size
            keep = pos
        if end > keep:
            parts.append(head[keep:end])
    if add_lines is not None:
        parts.append(add_lines)  # (no name the rules look at: plain_lines)
    _append_tail(req, host, via_name, parts, memo)
    return True


def _dropped(k: bytes, drop: frozenset[bytes], few: bytes | None) -> bool:
    """``k in drop``; ``few``: ``drop``'s filter (:class:`_DropFilter`), which tells most
    names that are not in it without hashing them (a fresh name's hash is a SipHash over
    its bytes)."""
    n: i64 = len(k)
    if few is not None and n:
        a: i64 = k[0]
        z: i64 = k[n - 1]
        if not few[(a & 31) << 5 | n & 31] or not few[1024 | (z & 31) << 5 | n & 31]:
            return False
    return k in drop


class _DropFilter:
    """Per ``drop`` set (a hook's prebuilt frozenset: the same object request after
    request), a filter of its names: byte ``(first & 31) << 5 | length & 31`` and byte
    ``1024 | (last & 31) << 5 | length & 31`` are 1 for each name. A name for which either
    is 0 is not in the set. Remembered by identity (the last set) and in a bounded table."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: tuple[frozenset[bytes], bytes] = (frozenset(), bytes(2048))

    def of(self, drop: frozenset[bytes]) -> bytes:
        last = self.last
        if drop is last[0]:
            return last[1]
        f = _FILTERS.get(drop)
        if f is None:
            t = bytearray(2048)
            for name in drop:
                n = len(name)
                if n == 0:
                    continue  # (no field has an empty name)
                t[(name[0] & 31) << 5 | n & 31] = 1
                t[1024 | (name[n - 1] & 31) << 5 | n & 31] = 1
            f = remember(_FILTERS, drop, bytes(t), 64)
        self.last = (drop, f)
        return f


_FILTERS: Final[dict[frozenset[bytes], bytes]] = {}
_DROPS: Final = _DropFilter()


def forward_lite_head(
    req: Request,
    via_name: bytes | None,
    new_host: bytes | None,
    line: int,
    memo: ForwardMemo | None,
) -> bytes | None:
    """The whole upstream head of the usual lite request — no field the forwarding rules
    look at but Host, no field edit pending — as :func:`forward_lite_lines` and the head
    writer (``proxy/fastlines.py:request_head``) would join it: the client's request line
    (the first ``line`` bytes of ``req.lite_head``, which the caller checked the upstream's
    is), the Host line, the client's lines after it as one run, the added fields,
    ``Content-Length: 0`` for a bodiless POST/PUT/PATCH, the empty line. One join of five
    pieces, the Host line remembered (:class:`_HostLine`); None when the request is not
    one this writes (``parts``-wise writing then does it, with the same result)."""
    head = req.lite_head
    if head is None:
        return None
    code = req.lite_at
    if code & 1:
        return None  # a line to look at (and maybe cut)
    n = req.lite_n
    if n >= 0 and len(req.headers.raw()) != n:
        return None  # (the client's field list was edited in place)
    host = req.lite_host
    if host is None:
        return None  # (not reached: a lite head's first field is its Host)
    hl = _HOST_LINE.line(host if new_host is None else new_host)
    tail = _tail(req, host, via_name, memo)
    run = head[code >> 2 : len(head) - 2]
    last = b"content-length: 0\r\n\r\n" if req.method in _NEEDS_LENGTH else b"\r\n"
    return b"".join((head[:line], hl, run, tail, last))


class _HostLine:
    """The last ``host: value CRLF`` line written, by value (a target's Host value is one
    object, request after request; a client's is compared as bytes): one piece to join
    instead of three. One tuple, replaced whole."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: tuple[bytes, bytes] = (b"", b"host: \r\n")

    def line(self, value: bytes) -> bytes:
        last = self.last
        if value is last[0] or value == last[0]:
            return last[1]
        out = b"host: " + value + b"\r\n"
        self.last = (value, out)
        return out


_HOST_LINE: Final = _HostLine()


def _append_tail(
    req: Request,
    host: bytes | None,
    via_name: bytes | None,
    parts: list[bytes],
    memo: ForwardMemo | None,
) -> None:
    parts.append(_tail(req, host, via_name, memo))


def _tail(
    req: Request,
    host: bytes | None,
    via_name: bytes | None,
    memo: ForwardMemo | None,
) -> bytes:
    """The added fields of a usual request (Host is all they depend on besides the
    connection), from the connection's memo or the bounded table of them."""
    if (
        memo is not None
        and memo.tail
        and memo.host == host
        and memo.version == req.version
        and memo.client_ip == req.client_ip
        and memo.via == via_name
    ):
        # the connection's peer, scheme and port are the same for all its requests
        return memo.tail
    key = (req.peer_ip, req.client_ip, req.scheme, req.server_port, req.version, host, via_name)
    tail = _TAILS.get(key)
    if tail is None:
        sc = _Scan([])  # a usual request: its Host is all the added fields depend on
        sc.host = host
        lines: list[bytes] = []
        append_fields(lines, _added(req, sc, via_name))
        tail = remember(_TAILS, key, b"".join(lines), 1024)
    if memo is not None:
        memo.tail = tail
        memo.host = host
        memo.version = req.version
        memo.client_ip = req.client_ip
        memo.via = via_name
    return tail


def plain_lines(fields: list[tuple[bytes, bytes]]) -> bytes | None:
    """``fields`` serialised (``name: value CRLF`` each) when none of their names is one the
    forwarding rules look at (they would pass :func:`forward_header_lines` as they are), for
    a hook to hand with a pending field edit; None otherwise."""
    for k, _ in fields:
        if k in _LOOK:
            return None
    parts: list[bytes] = []
    append_fields(parts, fields)
    return b"".join(parts)


#: fields :func:`forward_header_lines` looks at rather than copies
_LOOK: Final = _DROP_UNTRUSTED | _REWRITTEN | {b"host", b"close"}
#: fields that make a request not "usual" for :func:`forward_header_lines` ("close": a
#: field of that name goes when Connection says close, which the general path sorts out)
_NOT_PLAIN: Final = frozenset({b"via", b"upgrade", b"close"})
#: the names other than Host that make the lite parser's head need a look field by field
#: (``http/serverlite.py`` notes them as it reads the head)
LITE_LOOK: Final = _LOOK - {b"host"}


#: serialised added fields per (peer, client ip, scheme, port, version, Host, Via name)
_TAILS: Final[dict[tuple[str, str, str, int, str, bytes | None, bytes | None], bytes]] = {}


def set_request_framing(ureq: Request) -> None:
    """(Re)write Content-Length / Transfer-Encoding of the upstream request from its body."""
    h = ureq.headers
    raw = h.raw()
    if any(k == b"content-length" or k == b"transfer-encoding" for k, _ in raw):
        h.remove_many((b"content-length", b"transfer-encoding"))
    if ureq.body is not None:
        if ureq.content_length is not None:
            h.add_raw(b"content-length", str(ureq.content_length).encode())
        else:
            h.add_raw(b"transfer-encoding", b"chunked")
    elif ureq.method in _NEEDS_LENGTH:
        h.add_raw(b"content-length", b"0")


def needs_zero_length(method: str) -> bool:
    """A request of ``method`` without a body is sent with ``Content-Length: 0``."""
    return method in _NEEDS_LENGTH


def with_forwarded_prefix(
    items: list[tuple[bytes, bytes]], prefix: str
) -> list[tuple[bytes, bytes]]:
    """``items`` with X-Forwarded-Prefix set to the stripped ``prefix`` (Kong/Traefik
    convention: the upstream can build absolute links); any earlier value is replaced."""
    out = [kv for kv in items if kv[0] != b"x-forwarded-prefix"]
    out.append((b"x-forwarded-prefix", prefix.encode("latin-1")))
    return out

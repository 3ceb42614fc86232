"""A request that arrived as a field list on a multiplexed stream (HTTP/2, HTTP/3).

HTTP/2 (``http/h2.py``) and HTTP/3 (``http/h3.py``) both receive a request as a list of
``(name, value)`` fields with pseudo-headers (RFC 9113 §8.3, RFC 9114 §4.3) and both turn it
into the :class:`Request` the HTTP/1.1 listener builds, with the same checks: the rules live
here once and each protocol calls them.

- :func:`split_fields` separates pseudo-headers, joins cookie crumbs, applies the listener's
  underscore rule (``http/owned.py``) and sizes the section;
- :func:`check_head` applies the limits (431) and the method and field rules of the
  HTTP/1.1 parser (``http/validate.py``): the request is forwarded on an HTTP/1.1 hop, where
  these bytes would reframe it (or its parser refuse them);
- :func:`build_request` checks the target (414, 400), maps ``:authority`` to Host (a Host
  field naming another entity is a 400: :func:`same_authority`), reads Content-Length (413)
  and ``Expect``, resolves the client IP through the trusted proxies;
- :class:`StreamBody` is the request body: a read timeout (``limits.body_timeout`` → 408), a
  hook on the first read (``Expect: 100-continue`` is answered then) and one on every
  consumed chunk (HTTP/2 returns flow-control credit there).

The response writer of a stream and the opening and serving of its request are
``http/streamserve.py``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from portway.errors import (
    BadRequestError,
    GatewayError,
    HeadersTooLargeError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UriTooLongError,
)
from portway.http.body import BodyStream
from portway.http.forwarded import TrustedProxies
from portway.http.headers import Headers
from portway.http.limits import ServerLimits
from portway.http.models import Request
from portway.http.owned import drop_underscored
from portway.http.path import normalize_path
from portway.http.server import _parse_host
from portway.http.validate import METHODS_OK, TARGET_OK, check_fields, check_target


class StreamBody(BodyStream):
    """A request body on a stream: ``ack(n)`` is called as ``n`` bytes are consumed,
    ``first_read()`` once when the handler first reads, and a read waits at most
    ``timeout`` seconds for the client's next bytes (0: no limit)."""

    __slots__ = ("_ack", "_first_read", "_timeout")

    def __init__(
        self,
        ack: Callable[[int], None] | None,
        first_read: Callable[[], None] | None,
        timeout: float = 0.0,
    ) -> None:
        super().__init__()
        self._ack = ack
        self._first_read = first_read
        #: ``limits.body_timeout``: the longest wait for the client's next DATA (credit is
        #: returned as the body is read, so a reader waiting is waiting on the client)
        self._timeout = timeout

    def _pop(self) -> bytes:
        chunk = super()._pop()
        if self._ack is not None:
            self._ack(len(chunk))
        return chunk

    def _started(self) -> None:
        f = self._first_read
        if f is not None:
            self._first_read = None
            f()

    async def read(self) -> bytes:
        self._started()
        if self._chunks or self._eof or self._exc is not None or self._timeout <= 0:
            return await super().read()
        try:
            async with asyncio.timeout(self._timeout):
                return await super().read()
        except TimeoutError:
            # the client stalled its body: its fault (408), as on HTTP/1.1
            err = RequestTimeoutError("request body timed out")
            self.set_exception(err)
            raise err from None

    def read_nowait(self) -> bytes | None:
        self._started()
        return super().read_nowait()


@dataclass(slots=True)
class StreamHead:
    """A stream's request fields, split: ``pseudo`` (``:method``…), the regular ``fields``
    (cookie crumbs joined), and the section's size as HPACK/QPACK count it."""

    pseudo: dict[bytes, bytes]
    fields: list[tuple[bytes, bytes]]
    size: int

    @property
    def raw_method(self) -> bytes:
        return self.pseudo.get(b":method", b"GET")


def split_fields(
    headers: Iterable[tuple[bytes, bytes]],
    underscores: bool | None,
    owned: Callable[[], frozenset[bytes]],
) -> StreamHead:
    """Split a request's field list (never raises: the checks are :func:`check_head`'s).
    ``owned()`` gives the names the gateway sets (asked only for names containing ``_``)."""
    pseudo: dict[bytes, bytes] = {}
    fields: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    size = 0
    for k, v in headers:
        # (exact ``bytes`` as nghttp2's and aioquic's fields are: no copy, no call)
        if type(k) is not bytes:
            k = bytes(k)
        if type(v) is not bytes:
            v = bytes(v)
        size += len(k) + len(v) + 32
        if k.startswith(b":"):
            pseudo[k] = v
        elif k == b"cookie":
            cookies.append(v)
        elif (
            95 in k
            and underscores is not None
            and drop_underscored(k.lower(), underscores, owned())
        ):
            continue  # the rule of the HTTP/1.1 listener (http/owned.py)
        else:
            fields.append((k, v))
    if cookies:
        # RFC 9113 §8.2.3, RFC 9114 §4.2.1: crumbs are joined again for an HTTP/1.1 hop
        fields.append((b"cookie", b"; ".join(cookies)))
    return StreamHead(pseudo, fields, size)


#: a scheme's default port as an authority's suffix (RFC 3986 §6.2.3: the same as none)
_DEFAULT_PORT: Final[dict[bytes, bytes]] = {b"http": b":80", b"https": b":443"}


def _authority_key(authority: bytes, scheme: bytes) -> bytes:
    """``authority`` normalized as RFC 3986 §6.2.2-6.2.3 compare it: the host in lower case,
    no port when it is empty or ``scheme``'s default."""
    a = authority.lower()
    if a.endswith(b":"):
        return a[:-1]
    port = _DEFAULT_PORT.get(scheme)
    if port is not None and a.endswith(port):
        return a[: -len(port)]
    return a


def same_authority(host: bytes, authority: bytes, scheme: bytes) -> bool:
    """Whether a Host value names the entity ``:authority`` names (RFC 9113 §8.3.1, RFC 9114
    §4.3.1), after the scheme-based normalization of RFC 3986 §6.3: ``A`` and ``a:80``
    are ``a`` for ``http``."""
    return host == authority or _authority_key(host, scheme) == _authority_key(authority, scheme)


def check_head(head: StreamHead, limits: ServerLimits, fields_checked: bool = False) -> None:
    """The size limits (431) and the HTTP/1.1 parser's method and field rules.
    ``fields_checked``: the fields as received are known to pass ``check_fields(h2=True)``
    already (libnghttp2's RFC 9113 checks, a superset of those rules, accepted every one of
    them: ``tests/http/test_h2_engine.py`` compares the two byte by byte); the Cookie
    value :func:`split_fields` joined is still checked."""
    if head.size > limits.max_header_bytes:
        raise HeadersTooLargeError("request header section too large")
    if len(head.fields) > limits.max_header_count:
        raise HeadersTooLargeError("too many request header fields")
    if head.raw_method not in METHODS_OK:
        # (a method an llhttp upstream would not parse: refused as on HTTP/1.1)
        raise BadRequestError("invalid request method")
    fields = head.fields
    if not fields_checked:
        check_fields(fields, h2=True)
    elif fields and fields[-1][0] == b"cookie":
        # the crumbs, joined here, make a new value (an empty last crumb ends it in a space)
        check_fields(fields[-1:], h2=True)


def build_request(
    head: StreamHead,
    limits: ServerLimits,
    trusted: TrustedProxies | None,
    *,
    version: str,
    scheme: str,
    peer: tuple[str, int],
    server_port: int,
    ended: bool,
    make_body: Callable[[bool], StreamBody],
) -> Request:
    """The :class:`Request` of a checked ``head``; ``make_body(expect_continue)`` gives the
    body unless the stream already ended. Raises :class:`GatewayError` (the client's fault)."""
    method = head.raw_method.decode("latin-1")
    if method == "CONNECT":
        raise GatewayError(f"CONNECT over HTTP/{version}", status=501, code="not_implemented")
    pseudo = head.pseudo
    target = pseudo.get(b":path", b"")
    if len(target) > limits.max_uri_bytes:
        raise UriTooLongError("request target too long")
    if not target.startswith(b"/"):
        raise BadRequestError("invalid request target")
    if target.translate(None, TARGET_OK):
        check_target(target)  # (raises, naming the byte)
    if 35 in target:  # b"#" (an int needle is a plain byte search)
        raise BadRequestError("fragment in request target")
    raw_path, _, query = target.partition(b"?")
    # (the fields' own list: ``split_fields`` made it for this request alone)
    headers = Headers.adopt(head.fields)
    hosts = 0
    host_field = b""
    for k, v in head.fields:
        if k == b"host":
            hosts += 1
            host_field = v
    if hosts > 1:
        raise BadRequestError("multiple Host header fields")
    authority = pseudo.get(b":authority")
    if authority is not None:
        if hosts:
            # RFC 9113 §8.3.1 / RFC 9114 §4.3.1: a Host naming another entity than
            # :authority makes the request malformed (on every engine: the h2 library's own
            # byte comparison is left to this one, h2guard._Stream)
            if host_field != authority and not same_authority(
                host_field, authority, pseudo.get(b":scheme", scheme.encode())
            ):
                raise BadRequestError("Host differs from :authority")
            headers.remove(b"host")
        # :authority takes precedence over Host
        headers.add_raw(b"host", authority)
    host_raw = headers.get_raw(b"host")
    if host_raw is None:
        raise BadRequestError("missing :authority")
    host = _parse_host(host_raw)
    path = normalize_path(raw_path, allow_encoded_slashes=True)
    cl: int | None = None
    cl_raw = headers.get_raw(b"content-length")
    if cl_raw is not None:
        if not cl_raw.isdigit():
            raise BadRequestError("invalid Content-Length")
        cl = int(cl_raw)
        limit = limits.max_body_bytes
        if limit is not None and cl > limit:
            raise PayloadTooLargeError("request body too large")
    expect = headers.get_raw(b"expect")
    expect_continue = False
    if expect is not None:
        expect_continue = expect.lower() == b"100-continue"
        headers.remove(b"expect")
    body = None if ended else make_body(expect_continue)
    peer_ip, peer_port = peer
    client_ip, is_trusted = trusted.client_ip(peer_ip, headers) if trusted else (peer_ip, False)
    return Request(
        method=method,
        path=path,
        query=query,
        headers=headers,
        version=version,
        host=host,
        client_ip=client_ip,
        client_port=peer_port,
        scheme=scheme,
        raw_target=target,
        body=body,
        content_length=cl,
        peer_ip=peer_ip,
        server_port=server_port,
        trusted_peer=is_trusted,
        expect_continue=False,
        upgrade=False,
    )


__all__ = [
    "StreamBody",
    "StreamHead",
    "build_request",
    "check_head",
    "same_authority",
    "split_fields",
]

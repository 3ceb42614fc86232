"""Request parsing of an HTTP/1.1 client connection: the llhttp callbacks and the building of
a :class:`~portway.http.models.Request` from what they collected.

:class:`ServerParsing` is the base of :class:`~portway.http.server.ServerConnection` (which
holds the connection's state machine): llhttp (strict: it already rejects Content-Length with
Transfer-Encoding, duplicate or invalid Content-Length, obs-fold, bare LF and control
characters) calls these methods, and they add the checks llhttp leaves to us: version, Host,
transfer codings and size limits. A finished head goes to ``_enqueue`` (the subclass's).

An error found inside a callback is raised as :class:`_Abort` and kept in ``_pending``
(httptools re-wraps callback exceptions as parse errors); anything else raised there is a
Portway bug, kept in ``_bug`` for a logged 500.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import httptools

from portway.errors import (
    BadRequestError,
    GatewayError,
    HeadersTooLargeError,
    PayloadTooLargeError,
    UriTooLongError,
)
from portway.http.body import BodyStream
from portway.http.flow import WriteFlow
from portway.http.forwarded import TrustedProxies
from portway.http.headers import HOP_BY_HOP, Headers, field_list, value_tokens
from portway.http.memo import remember
from portway.http.models import Request
from portway.http.owned import drop_underscored
from portway.http.path import normalize_path
from portway.http.serverstate import FAST, IDLE, TASK
from portway.http.sweeper import NEVER, Sweeper
from portway.http.upgrade import is_websocket
from portway.http.wire import FORBIDDEN_TRAILERS, METHODS

if TYPE_CHECKING:  # (serverlite imports this module)
    from portway.http.serverlite import ParserHooks


class _Abort(Exception):
    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


#: llhttp's method names as the ``str`` a Request carries
_METHODS: Final[dict[bytes, str]] = {m.encode(): m for m in METHODS}
#: the header list of no request (between requests; never mutated: a new message gets a
#: fresh list in ``on_message_begin`` before anything is appended)
NO_HEADERS: Final[list[tuple[bytes, bytes]]] = []


class ServerParsing(WriteFlow):
    """The parse half of a client connection (see the module docstring). Every attribute is
    set by the subclass's ``__init__``; the per-message ones are reset by
    ``on_message_begin`` and dropped again (``_forget_message``) once the connection idles,
    so an idle connection does not keep its last request's header list alive."""

    # set by ServerConnection.__init__ (declared here for the callbacks)
    state: int
    #: loop time at which the header/idle/body timeout fires (checked by the sweeper)
    deadline: float
    #: the sweeper's: the time of the bucket this connection is filed in
    due: float
    _sweeper: Sweeper
    #: ``loop.time``, bound once per loop (shared by the loop's connections)
    now: Callable[[], float]
    underscores: bool | None
    trusted: TrustedProxies
    #: ``bool(trusted)``, read once (the truth test of a class is a slot call)
    _trusts: bool
    scheme: str
    peer_ip: str
    peer_port: int
    server_port: int
    requests: int
    parser: httptools.HttpRequestParser
    _max_uri: int
    _max_header_bytes: int
    _max_header_count: int
    _body_limit: int | None
    _body_timeout: float
    _body: BodyStream | None
    _body_seen: int
    _pending: GatewayError | None
    _bug: Exception | None
    # per-message parse state
    _url: bytes
    _headers: list[tuple[bytes, bytes]]
    #: the field bytes counted so far (``on_header``); -1: the lite parser left the
    #: fields unread (``Headers.unread``)
    _header_bytes: int
    _host: bytes | None
    _hosts: int
    _te: bytes | None
    _cl: bytes | None
    _expect: bytes | None
    _conn: bytes | None
    _upgrade: bytes | None
    #: a request whose Upgrade is ignored was parsed: the head that resumes the parse after
    #: llhttp's upgrade stop (b"" when it has no body), else None (``_skip_upgrade``)
    _resync: bytes | None = None
    #: that request's body stream, held back until then
    _held: BodyStream | None = None
    #: a Proxy-Connection field was seen (llhttp reads it as Connection)
    _pconn: bool
    #: where the target's "?" is: -1 none and no "#" either, -2 not known (the lite
    #: parser's scan knows it; the callbacks leave it to ``_build_request``'s searches)
    _qmark: int
    #: the lite parser read the head (``http/serverlite.py``): ``Request.lite_at`` for the
    #: request, or -1
    _lite_at: int
    #: the lite parser (``http/serverlite.py``) may take the next message: every message
    #: this connection's own parser took left llhttp in a keep-alive state (a message that
    #: made it close the connection makes it reject what follows, and must go on doing so)
    _lite_ok: bool
    #: a request head is being parsed (a parser fact: also while a pipelined request is
    #: served, so not a connection state)
    _in_headers: bool
    #: the parser is between messages (the last one completed, the next not begun)
    _boundary: bool
    #: the bytes being parsed when they began at a message boundary, else b"" (for the
    #: request-line shortcut of ``_version``)
    _chunk: bytes
    #: the bytes the current message began at the start of, or b"" (see ``_version``)
    _line: bytes

    # --- what the subclass provides -------------------------------------------------------
    def _enqueue(self, item: Request | GatewayError) -> None:
        raise NotImplementedError

    def _owned_headers(self) -> frozenset[bytes]:
        raise NotImplementedError

    def _fields_unread(self) -> bool:
        """The lite parser may leave a head's fields unread (``App.fields_unread``)."""
        return False

    def expired(self, now: float) -> None:
        raise NotImplementedError

    def _resume_body(self) -> None:
        raise NotImplementedError

    def parse_failed(self, e: Exception) -> None:
        """A parse stopped on ``e`` (llhttp's error, or a callback's): answer it."""
        raise NotImplementedError

    def _set_deadline(self, deadline: float) -> None:
        """Move the timeout; one earlier than the sweeper's bucket is re-filed (see
        ``http/sweeper.py``: later ones cost nothing here)."""
        self.deadline = deadline
        if deadline < self.due:
            self._sweeper.refile(self)

    def _forget_message(self) -> None:
        """Drop the last message's parse state (the connection idles)."""
        self._url = b""
        self._headers = NO_HEADERS
        self._host = None
        self._te = self._cl = self._expect = self._conn = self._upgrade = None

    # --- llhttp callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._in_headers = True
        self._host = None
        self._hosts = 0
        self._te = self._cl = self._expect = self._conn = self._upgrade = None
        self._pconn = False
        self._qmark = -2
        self._lite_at = -1
        self._boundary = False
        # The first message of bytes that began at a message boundary starts at their first
        # byte; ``_build_request`` reads its version there (see ``_version``).
        self._line = self._chunk
        self._chunk = b""  # a later message of these bytes does not start at their start

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_uri:
            self._pending = UriTooLongError("request target too long")
            raise _Abort(self._pending)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_headers:
            body = self._body
            if body is not None:
                lname = name.lower()
                if lname in FORBIDDEN_TRAILERS:
                    # RFC 9110 §6.5.1: an upstream merging trailers into the header section
                    # must never get framing, routing, auth or forwarding fields from a client
                    return
                if body.trailers is None:
                    body.trailers = Headers()
                body.trailers.add_raw(lname, value)
            return
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._max_header_bytes:
            self._pending = HeadersTooLargeError("request header section too large")
            raise _Abort(self._pending)
        if len(self._headers) >= self._max_header_count:
            self._pending = HeadersTooLargeError("too many request header fields")
            raise _Abort(self._pending)
        n = name.lower()
        if value and value[-1] <= 32:
            # llhttp drops leading OWS only; RFC 9110 §5.5: the value has none either side
            kept = value.rstrip(b" \t")
            if 9 in value[len(kept) :] and n == b"transfer-encoding":
                # llhttp reads "chunked" then a tab as no chunked coding and fails the
                # message right after its head: refused here, before the head goes upstream
                self._pending = BadRequestError("unsupported transfer coding")
                raise _Abort(self._pending)
            value = kept
        if (
            95 in n  # b"_" (an int needle: a byte search)
            and self.underscores is not None
            and drop_underscored(n, self.underscores, self._owned_headers())
        ):
            return
        self._headers.append((n, value))
        # the fields the framing needs, noted while parsing instead of searched for later;
        # told apart by first letter and equality (a set lookup would hash every new name)
        c = n[0]
        if c == 104:  # h
            if n == b"host":
                self._hosts += 1
                self._host = value
        elif c == 99:  # c
            if n == b"content-length":
                if self._cl is None:
                    self._cl = value
            elif n == b"connection":
                self._conn = value if self._conn is None else self._conn + b", " + value
        elif c == 116:  # t
            if n == b"transfer-encoding":
                # all codings count: "identity" then "chunked" is not plain chunked
                self._te = value if self._te is None else self._te + b", " + value
        elif c == 101 and n == b"expect" and self._expect is None:
            self._expect = value
        elif c == 117 and n == b"upgrade":  # u
            self._upgrade = value if self._upgrade is None else self._upgrade + b", " + value
        elif c == 112 and n == b"proxy-connection":  # p
            self._pconn = True

    def on_headers_complete(self) -> None:
        self.head_done(self.parser.get_method(), None)

    def head_done(self, raw_method: bytes, version: str | None) -> None:
        """A whole head was parsed (by the callbacks above, or read by the lite parser:
        ``http/serverlite.py``): build its request and enqueue it. ``version``: the
        request's, when the caller knows it."""
        self._in_headers = False
        if self.state <= IDLE:
            # HEAD/IDLE: the header (or idle) timeout is over; serving states own the timer
            self.deadline = NEVER
        # (one handler and distinct names: compiled, two ``except ... as e`` clauses share one
        # variable typed by the first, and the second's assignment raised a TypeError)
        try:
            req = self._build_request(raw_method, version)
        except Exception as exc:
            if self._header_bytes < 0:
                # the error answer echoes the client's request id (``send_error``): the
                # fields the lite parser left unread are read now
                self._headers = field_list(self._chunk, len(raw_method) + len(self._url) + 12)
            if isinstance(exc, _Abort):
                self._pending = exc.error
            elif isinstance(exc, GatewayError):
                self._pending = exc
            else:
                # a bug in Portway, not the client's fault: kept for a logged 500
                self._bug = exc
            raise
        self.requests += 1
        self._enqueue(req)

    def on_body(self, body: bytes) -> None:
        b = self._body
        if b is None:
            return
        b.feed(body)
        if self._body_limit is not None and b.received > self._body_limit:
            self._pending = PayloadTooLargeError("request body too large")
            b.set_exception(self._pending)
            raise _Abort(self._pending)

    def on_message_complete(self) -> None:
        self._boundary = True
        if self._body is not None:
            self._body.feed_eof()
            self._body = None
            s = self.state
            if s in (TASK, FAST):  # the body timeout is over
                self.deadline = NEVER

    # --- request construction ----------------------------------------------------------------
    def _build_request(self, raw_method: bytes, version: str | None) -> Request:
        p = self.parser
        method = _METHODS.get(raw_method)
        if method is None:
            method = raw_method.decode("ascii")
        if version is None:
            version = self._version(raw_method)
        if version not in ("1.1", "1.0"):
            raise _Abort(BadRequestError(f"unsupported HTTP version {version}"))
        if method == "CONNECT":
            # a proxy tunnel to any host: not what a gateway offers (HTTP/2 answers the same)
            raise _Abort(
                GatewayError("CONNECT is not supported", status=501, code="not_implemented")
            )
        url = self._url
        if self._header_bytes < 0:
            # the lite parser left the fields unread (``http/serverlite.py``): they follow
            # "METHOD SP target SP HTTP/1.1 CRLF" in the bytes it read
            headers = Headers.unread(self._chunk, len(raw_method) + len(url) + 12)
        else:
            headers = Headers.adopt(self._headers)
        lite_at = self._lite_at
        if self._hosts > 1:
            raise _Abort(BadRequestError("multiple Host header fields"))
        host_raw = self._host
        qmark = self._qmark
        raw_path = url
        # the path's length in ``url`` when it is a prefix of it (sliced only if needed)
        plen = -1
        if url.startswith(b"/"):
            if qmark >= 0:
                plen = qmark
                query = url[qmark + 1 :]
            elif qmark == -2 and 63 in url:  # b"?"
                raw_path, _, query = url.partition(b"?")
            else:
                plen = len(url)
                query = b""
        elif url == b"*":
            raise _Abort(BadRequestError("asterisk-form request target is not supported"))
        else:
            try:
                # Any: httptools' stubs say bytes where it returns None (no userinfo, no
                # port), and compiled code would check the stub's types
                u: Any = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError as e:
                raise _Abort(BadRequestError("invalid request target")) from e
            if u.schema not in (b"http", b"https") or not u.host or u.userinfo:
                # RFC 9110 §4.2.4: userinfo in an http(s) URI is to be treated as an error
                raise _Abort(BadRequestError("invalid request target"))
            raw_path = u.path or b"/"
            query = u.query or b""
            authority = u.host + (b":%d" % u.port if u.port else b"")
            # RFC 9112 §3.2.2: the absolute-form authority replaces Host
            headers.remove("host")
            headers.add_raw(b"host", authority)
            host_raw = authority
            lite_at = -1  # (Host is no longer the client's first line)
        if host_raw is None:
            if version == "1.1":
                raise _Abort(BadRequestError("missing Host header"))
            host = ""
        else:
            # the last Host again (one comparison, no hash of the fresh value)
            lh = _LAST.host
            if host_raw == lh[0]:
                host = lh[1]
            else:
                host = _parse_host(host_raw)
                _LAST.host = (host_raw, host)
        # b"#"; an int is a byte search, a bytes needle goes through an exception
        if qmark == -2 and 35 in url:
            raise _Abort(BadRequestError("fragment in request target"))
        if plen >= 0:
            # the last path again: compared in place (no slice, no hash of the fresh bytes)
            lp = _LAST.path
            known = lp[0]
            if plen == len(known) and url.startswith(known):
                path = lp[1]
            else:
                if plen < len(url):
                    raw_path = url[:plen]
                path = normalize_path(raw_path, allow_encoded_slashes=True)
                _LAST.path = (raw_path, path)
        else:
            path = normalize_path(raw_path, allow_encoded_slashes=True)
        te = self._te
        cl_raw = self._cl
        chunked = False
        if te is not None:
            if version == "1.0":
                # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing
                raise _Abort(BadRequestError("Transfer-Encoding in an HTTP/1.0 request"))
            if te.strip().lower() != b"chunked":
                raise _Abort(BadRequestError("unsupported transfer coding"))
            chunked = True
        cl: int | None = None
        if cl_raw is not None:
            cl = int(cl_raw)
            if self._body_limit is not None and cl > self._body_limit:
                raise _Abort(PayloadTooLargeError("request body too large"))
        body: BodyStream | None = None
        if chunked or (cl is not None and cl > 0):
            t = self.transport
            assert t is not None
            body = BodyStream(t.pause_reading, self._resume_body)
            self._body = body
            self._body_seen = -1
            self._set_deadline(self.now() + self._body_timeout)
        conn = self._conn
        # (never a lite head's: it names only keep-alive, and its lines must stay its fields)
        if conn is not None and conn != b"keep-alive" and conn.lower() != b"keep-alive":
            _drop_named(headers, conn)
        if self._trusts:
            client_ip, trusted = self.trusted.client_ip(self.peer_ip, headers)
        else:
            client_ip, trusted = self.peer_ip, False
        expect = self._expect
        if version != "1.0":
            keep_alive = conn is None or conn.lower().find(b"close") < 0
        else:
            keep_alive = conn is not None and conn.lower().find(b"keep-alive") >= 0
        upgrade = False
        # llhttp's upgrade flag needs an Upgrade field (CONNECT, the other way, is refused
        # above), and ``on_header`` notes every one: without one, no call to ask
        if self._upgrade is not None and p.should_upgrade():
            if body is None and is_websocket(self._upgrade):
                upgrade = True
            else:
                # not performed (h2c, ..., a handshake with a body: http/upgrade.py): served
                # as a plain request, and the parse goes on after it (``_skip_upgrade``)
                self._ignore_upgrade(chunked, cl, keep_alive)
        # (the lite parser's messages are all HTTP/1.1 keep-alive ones without this field)
        self._lite_ok = keep_alive and version == "1.1" and not self._pconn
        req = Request(
            method=method,
            path=path,
            query=query,
            headers=headers,
            version=version,
            host=host,
            client_ip=client_ip,
            client_port=self.peer_port,
            scheme=self.scheme,
            raw_target=url,
            body=body,
            content_length=cl if not chunked else None,
            peer_ip=self.peer_ip,
            server_port=self.server_port,
            trusted_peer=trusted,
            expect_continue=expect is not None and expect.lower() == b"100-continue",
            upgrade=upgrade,
            keep_alive=keep_alive,
        )
        if lite_at >= 0:
            # the read bytes: the lite parser's head is all of them (``feed_lite``)
            req.lite_head = self._chunk
            req.lite_at = lite_at
            req.lite_n = -1 if self._header_bytes < 0 else len(self._headers)
            req.lite_host = host_raw
        return req

    # --- an Upgrade not performed (http/upgrade.py) -----------------------------------------
    def _ignore_upgrade(self, chunked: bool, cl: int | None, keep_alive: bool) -> None:
        """Called by ``_build_request`` for a request whose Upgrade is ignored (RFC 9110
        §7.8). httptools makes llhttp end such a message at its head (its body unread) and
        stop with ``HttpParserUpgrade``; ``_skip_upgrade`` then resumes the parse. The body
        stream is held back until then, so the message end llhttp reports right after the
        head does not end the body too."""
        if self._body is None:
            self._resync = b""
            return
        self._held, self._body = self._body, None
        framing = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % (cl or 0)
        # the same framing and persistence as the client's head: llhttp then delimits the
        # body (chunk sizes, trailers) and refuses bytes after a ``close`` as for any request
        close = b"" if keep_alive else b"connection: close\r\n"
        self._resync = b"PUT / HTTP/1.1\r\nhost: a\r\n" + close + framing + b"\r\n\r\n"

    def _skip_upgrade(self, hooks: ParserHooks) -> bool:
        """After ``HttpParserUpgrade``: False when the upgrade is performed (the caller keeps
        the bytes after the head for the tunnel), else True once the parser is ready to read
        those bytes as HTTP/1.1 again. llhttp, resumed, expects a new message; when the
        ignored request has a body it is first fed a head with the body's framing, parsed
        with no connection to report to (``hooks.conn`` None) by a new parser (the resumed
        one refuses anything after a ``close`` message), so that llhttp itself reads the
        body that follows, into the held body stream, and then the next request."""
        head = self._resync
        if head is None:
            return False
        self._resync = None
        if head:
            self._body, self._held = self._held, None
            self._boundary = False  # (llhttp reported the message end after the head)
            # a new parser: llhttp, resumed, refuses any byte after a ``close`` message,
            # but the body still is to come; the synthetic head says ``close`` again
            self.parser = httptools.HttpRequestParser(hooks.protocol)
            hooks.conn = None
            try:
                self.parser.feed_data(head)
            finally:
                hooks.conn = self
        return True

    def _version(self, raw_method: bytes) -> str:
        """The request's HTTP version. httptools only offers it as a freshly formatted
        string (~3k instructions); when the request line is the first line of the bytes being
        parsed (``_line``), llhttp accepted exactly ``method SP target SP version CRLF``
        there, so the version sits right after the target it reported. Anything else (a
        line split across reads, leading empty lines, a pipelined request) asks the parser."""
        line = self._line
        if line:
            self._line = b""
            k = len(raw_method) + len(self._url) + 1
            if line[k : k + 11] == b" HTTP/1.1\r\n":
                return "1.1"
            # llhttp also takes "RTSP/1.x" (GET, POST, OPTIONS, ...) and "ICE/1.x" (SOURCE)
            # and reports only the digits: not HTTP, so refused (RFC 9112 §2.3: HTTP-name is
            # "HTTP", case-sensitive). The line's last word is its protocol (llhttp accepted
            # it: no space inside); a line split across reads arrives here made whole (server.py).
            s = 0
            while s < len(line) and (line[s] == 13 or line[s] == 10):
                s += 1  # (empty lines before a request line, which llhttp skips)
            end = line.find(b"\r\n", s)
            if end > s:
                start = line.rfind(b" ", s, end) + 1
                if line[start : start + 5] != b"HTTP/":
                    raise _Abort(BadRequestError("unsupported protocol: not HTTP"))
        return self.parser.get_http_version()


class _Last:
    """The last Host value and origin-form path a request had, with what ``_parse_host``
    and ``normalize_path`` (both pure: they return, or raise for the client's bytes) made
    of them: a client's keep-alive requests, and most clients of a gateway, repeat them.
    Each is one tuple, replaced whole."""

    __slots__ = ("host", "path")

    def __init__(self) -> None:
        # (no request has this Host: llhttp refuses a NUL; nor this path: it starts "/")
        self.host: tuple[bytes, str] = (b"\x00", "")
        self.path: tuple[bytes, str] = (b"", "")


_LAST: Final = _Last()


def _drop_named(headers: Headers, conn: bytes) -> None:
    """RFC 9110 §7.6.1: the fields the client's Connection options (``conn``) name are for
    this hop only. They leave the request as it is read, so nothing later takes a field of
    such a name for the client's: a request hook's field of that name (an identity plugin's
    X-Anonymous-Consumer, a ``headers`` plugin's) goes upstream. Host always stays (an
    HTTP/1.1 request carries one, RFC 9112 §3.2), and so do the hop-by-hop fields, which the
    forwarding rules read and drop themselves (Upgrade: ``Connection: upgrade``)."""
    named = value_tokens(conn) - _KEPT_NAMED
    if named and any(kv[0] in named for kv in headers.raw()):
        headers.remove_many(named)


def _parse_host(raw: bytes) -> str:
    # A server sees few distinct Host values; remember the valid plain ones (bounded, so a
    # client sending random hosts only costs the regex).
    known = _HOSTS.get(raw)
    if known is not None:
        return known
    if _PLAIN_HOST.fullmatch(raw) is not None:
        return remember(_HOSTS, raw, raw.lower().partition(b":")[0].decode("ascii"), 256)
    h = raw.strip().lower()
    if not h:
        return ""
    if h.startswith(b"["):
        end = h.find(b"]")
        if end < 0:
            raise _Abort(BadRequestError("invalid Host header"))
        name, rest = h[: end + 1], h[end + 1 :]
    else:
        name, _, port = h.partition(b":")
        rest = b":" + port if _ else b""
    if rest and not (rest.startswith(b":") and rest[1:].isdigit()):
        raise _Abort(BadRequestError("invalid Host header"))
    for c in name:
        if c not in _HOST_CHARS:
            raise _Abort(BadRequestError("invalid Host header"))
    return name.decode("ascii")


#: names a Connection option never removes from the request (``_drop_named``)
_KEPT_NAMED: Final = HOP_BY_HOP | {b"host"}

#: the common Host: a name or IPv4 address with an optional port (anything else takes the
#: careful path below)
_PLAIN_HOST: Final = re.compile(rb"[A-Za-z0-9.-]+(?::[0-9]+)?")
_HOSTS: Final[dict[bytes, str]] = {}
_HOST_CHARS: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-._~[]:!$&'()*+,;=%")

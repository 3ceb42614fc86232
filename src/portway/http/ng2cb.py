"""The libnghttp2 callbacks of the HTTP/2 server engine (``http/ng2.py``), shared by every
session: one callback set, one data provider, one option set for the process.

A callback finds the connection nghttp2 is calling back for in :data:`cur`, which
``NgConnection`` sets around each ``nghttp2_session_mem_recv``/``mem_send`` (the only calls
that call back); nothing inside a callback calls back into those.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from portway.http import ng2lib as L

if TYPE_CHECKING:
    from portway.http.ng2 import NgConnection

log = logging.getLogger("portway.http.h2")

_loaded = L.load()
if _loaded is None:  # pragma: no cover - only imported once the library loaded
    raise ImportError("libnghttp2 is not available")
ffi: Any = _loaded[0]
lib: Any = _loaded[1]
#: (bound once: a call, not a method lookup on ``ffi`` per field)
_unpack: Any = ffi.unpack

#: the connection nghttp2 is calling back for
cur: NgConnection | None = None


# --- the callbacks, shared by every session ------------------------------------------------------
def _cb_error(exc_type: Any, exc: Any, tb: Any) -> None:
    log.error("error in an HTTP/2 callback", exc_info=(exc_type, exc, tb))


def _begin_frame(session: Any, hd: Any, ud: Any) -> int:
    c = cur
    assert c is not None
    return c.on_begin_frame(hd.stream_id, hd.type, hd.flags, hd.length)


def _header(
    session: Any, frame: Any, name: Any, nlen: int, value: Any, vlen: int, fl: int, ud: Any
) -> int:
    c = cur
    assert c is not None
    h = c._hdrs
    if h is not None:
        h.append((_unpack(name, nlen), _unpack(value, vlen)))
    return 0


def _invalid_header(
    session: Any, frame: Any, name: Any, nlen: int, value: Any, vlen: int, fl: int, ud: Any
) -> int:
    """A regular field nghttp2 finds invalid (its value's bytes, mostly): kept, so that our
    own rules judge it as on HTTP/1.1 and the h2 engine (a JSON 400 from ``check_head``),
    except NUL, CR and LF, which make the request malformed (RFC 9113 §8.2.1: a stream
    error, as h2 answers too). nghttp2 resets names with upper-case letters itself."""
    c = cur
    assert c is not None
    h = c._hdrs
    v = _unpack(value, vlen)
    if h is None or 0 in v or 13 in v or 10 in v:  # NUL, CR, LF
        lib.nghttp2_submit_rst_stream(session, 0, frame.hd.stream_id, L.PROTOCOL_ERROR)
        return L.ERR_TEMPORAL_CALLBACK_FAILURE
    h.append((_unpack(name, nlen), v))
    c._hbad = True  # the request's fields are all checked by our rules (``check_head``)
    return 0


def _frame_recv(session: Any, frame: Any, ud: Any) -> int:
    c = cur
    assert c is not None
    hd = frame.hd
    t = hd.type
    if t == L.HEADERS:
        sid = hd.stream_id
        h = c._hdrs
        if h is not None and c._hsid == sid:
            c._hdrs = None
            c._on_request(sid, h, bool(hd.flags & L.FLAG_END_STREAM))
        elif hd.flags & L.FLAG_END_STREAM:
            c.on_end(sid)  # request trailers end the body (their fields are not kept)
    elif t == L.DATA and hd.flags & L.FLAG_END_STREAM:
        c.on_end(hd.stream_id)
    return 0


def _data_chunk(session: Any, flags: int, sid: int, data: Any, n: int, ud: Any) -> int:
    c = cur
    assert c is not None
    c.on_data(sid, ffi.unpack(data, n))
    return 0


def _stream_close(session: Any, sid: int, code: int, ud: Any) -> int:
    c = cur
    assert c is not None
    c.on_stream_close(sid, code)
    return 0


def _read(session: Any, sid: int, buf: Any, length: int, flags: Any, source: Any, ud: Any) -> int:
    c = cur
    assert c is not None
    w = c.streams.get(sid)
    if w is None:
        flags[0] = L.DATA_FLAG_EOF
        return 0
    return w.read_into(buf, length, flags)


def _make_callbacks() -> tuple[Any, Any, list[Any]]:
    err = L.ERR_CALLBACK_FAILURE
    keep = [
        ffi.callback(
            "int(nghttp2_session *, const nghttp2_frame_hd *, void *)",
            _begin_frame,
            error=err,
            onerror=_cb_error,
        ),
        ffi.callback(
            "int(nghttp2_session *, const nghttp2_frame *, const char *, size_t, const char *,"
            " size_t, uint8_t, void *)",
            _header,
            error=err,
            onerror=_cb_error,
        ),
        ffi.callback(
            "int(nghttp2_session *, const nghttp2_frame *, const char *, size_t, const char *,"
            " size_t, uint8_t, void *)",
            _invalid_header,
            error=err,
            onerror=_cb_error,
        ),
        ffi.callback(
            "int(nghttp2_session *, const nghttp2_frame *, void *)",
            _frame_recv,
            error=err,
            onerror=_cb_error,
        ),
        ffi.callback(
            "int(nghttp2_session *, uint8_t, int32_t, const char *, size_t, void *)",
            _data_chunk,
            error=err,
            onerror=_cb_error,
        ),
        ffi.callback(
            "int(nghttp2_session *, int32_t, uint32_t, void *)",
            _stream_close,
            error=err,
            onerror=_cb_error,
        ),
        ffi.callback("nghttp2_data_source_read_callback", _read, error=err, onerror=_cb_error),
    ]
    pp = ffi.new("nghttp2_session_callbacks **")
    if lib.nghttp2_session_callbacks_new(pp) != 0:
        raise MemoryError("nghttp2_session_callbacks_new failed")
    cbs = pp[0]  # one set for the process: never freed
    # (no begin_headers callback: ``on_begin_frame`` tells a request head from trailers)
    lib.nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, keep[0])
    lib.nghttp2_session_callbacks_set_on_header_callback(cbs, keep[1])
    lib.nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, keep[2])
    lib.nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, keep[3])
    lib.nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, keep[4])
    lib.nghttp2_session_callbacks_set_on_stream_close_callback(cbs, keep[5])
    provider = ffi.new("nghttp2_data_provider *")
    provider.read_callback = keep[6]
    op = ffi.new("nghttp2_option **")
    if lib.nghttp2_option_new(op) != 0:
        raise MemoryError("nghttp2_option_new failed")
    opt = op[0]
    # request DATA is acknowledged as the handler reads it (nghttp2_session_consume)
    lib.nghttp2_option_set_no_auto_window_update(opt, 1)
    # SETTINGS entries per frame; the PING/SETTINGS rate is our token bucket (above)
    lib.nghttp2_option_set_max_settings(opt, 32)
    lib.nghttp2_option_set_max_outbound_ack(opt, 1000)
    return cbs, (provider, opt), keep


CALLBACKS, (PROVIDER, OPTION), _KEEP = _make_callbacks()


# --- the self-check of nghttp2's field validation ------------------------------------------------
#: request fields our rules (``validate.check_fields(h2=True)``) refuse: nghttp2's session must
#: keep every one of them from ``on_header`` (to ``on_invalid_header``, or a stream reset)
_INVALID: Final = (
    (b"x-p", b" lead"),
    (b"x-p", b"trail "),
    (b"x-p", b"a\tb\t"),
    (b"x-p", b"a\x01b"),
    (b"x-p", b"a\x7fb"),
    (b"x-p", b"a\x00b"),
    (b"x-p", b"a\rb"),
    (b"x-p", b"a\nb"),
    (b"X-P", b"v"),
    (b"x p", b"v"),
    (b"x(p", b"v"),
    (b"x\x7fp", b"v"),
)
#: a field every rule accepts: it must reach ``on_header`` (the probe saw fields at all)
_VALID: Final = (b"x-ok", b"a fine value")


#: the probe's callbacks while it runs: compiled, a local is freed after its last use in
#: Python, before nghttp2 calls it back (docs/architecture.md, s8-ng2b rule 2)
_probe_keep: list[Any] = []


def _probe_block(sid: int, name: bytes, value: bytes) -> bytes:
    """A HEADERS frame (END_STREAM, END_HEADERS) of a GET with one more field: HPACK
    indexed pseudo-headers, literals never added to the dynamic table."""
    block = b"\x82\x86\x84\x01\x01a\x00%c%s%c%s" % (len(name), name, len(value), value)
    return len(block).to_bytes(3, "big") + b"\x01\x05" + sid.to_bytes(4, "big") + block


def probe_field_checks(option: Any, invalid: tuple[tuple[bytes, bytes], ...] = _INVALID) -> bool:
    """Whether libnghttp2's session, with ``option``, keeps from ``on_header`` every field
    of ``invalid`` while passing :data:`_VALID`: only then may ``check_head`` skip our
    own field rules for a block whose every field reached ``on_header``
    (``NgConnection._hbad``). Run once at load (one session, a few hundred bytes): the
    ``libnghttp2.so.14`` found at run time is not necessarily the one the tests ran on."""
    seen: list[tuple[bytes, bytes]] = []

    def header(s: Any, f: Any, name: Any, nlen: int, value: Any, vlen: int, fl: int, u: Any) -> int:
        seen.append((_unpack(name, nlen), _unpack(value, vlen)))
        return 0

    def ignore(s: Any, f: Any, n: Any, nlen: int, v: Any, vlen: int, fl: int, u: Any) -> int:
        return 0  # (ignored: the field does not reach ``on_header``)

    sig = (
        "int(nghttp2_session *, const nghttp2_frame *, const char *, size_t, const char *,"
        " size_t, uint8_t, void *)"
    )
    on_header = ffi.callback(sig, header, error=L.ERR_CALLBACK_FAILURE)
    on_invalid = ffi.callback(sig, ignore, error=L.ERR_CALLBACK_FAILURE)
    _probe_keep[:] = [on_header, on_invalid]
    try:
        pp = ffi.new("nghttp2_session_callbacks **")
        if lib.nghttp2_session_callbacks_new(pp) != 0:
            return False
        # (the callback set is left, a few hundred bytes once: the cdef has no ``_del``)
        lib.nghttp2_session_callbacks_set_on_header_callback(pp[0], on_header)
        lib.nghttp2_session_callbacks_set_on_invalid_header_callback(pp[0], on_invalid)
        sp = ffi.new("nghttp2_session **")
        if lib.nghttp2_session_server_new2(sp, pp[0], ffi.NULL, option) != 0:
            return False
        session = ffi.gc(sp[0], lib.nghttp2_session_del)
        data = [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"]
        for i, (k, v) in enumerate((*invalid, _VALID)):
            data.append(_probe_block(2 * i + 1, k, v))
        wire = b"".join(data)
        rv = lib.nghttp2_session_mem_recv(session, wire, len(wire))
    finally:
        _probe_keep.clear()
    return rv == len(wire) and _VALID in seen and not any(f in seen for f in invalid)


#: libnghttp2's session validates request fields at least as our rules do (see
#: :func:`probe_field_checks`); if not, ``NgConnection`` checks every field itself (not
#: ``Final``: read per connection, so that a test can say otherwise)
fields_validated: bool = probe_field_checks(OPTION)
if not fields_validated:  # pragma: no cover - a libnghttp2 that lets invalid fields through
    log.warning("libnghttp2 passes invalid request fields: Portway checks every field itself")


__all__ = ["CALLBACKS", "OPTION", "PROVIDER", "cur", "fields_validated", "probe_field_checks"]

"""The libnghttp2 callbacks of the HTTP/2 server engine (``http/ng2.py``), shared by every
session: one callback set, one data provider, one option set for the process.

A callback finds the connection nghttp2 is calling back for in :data:`cur`, which
``NgConnection`` sets around each ``nghttp2_session_mem_recv``/``mem_send`` (the only calls
that call back); nothing inside a callback calls back into those.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

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


__all__ = ["CALLBACKS", "OPTION", "PROVIDER", "cur"]

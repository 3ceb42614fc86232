"""libnghttp2 through cffi in ABI mode: the declarations the server engine uses, and loading.

Nothing is compiled at install time: :func:`load` opens the system's ``libnghttp2.so.14``
with ``ffi.dlopen`` and returns ``(ffi, lib)``, or ``None`` when cffi or the library is
missing (``http/h2engine.py`` then falls back to the pure-Python ``h2`` engine). Structures
are declared with the exact layout of nghttp2 1.x (ABI mode cannot ask the compiler): only
the members the engine reads, and unions with their leading members only, since the engine
only ever reads through pointers nghttp2 hands it.

Pointer parameters carrying bytes (header names and values, DATA payloads, the receive
buffer) are declared ``char *`` where nghttp2 says ``uint8_t *`` (same ABI): cffi then
accepts ``bytes`` for them and ``ffi.unpack`` returns ``bytes``, not a list of ints.
"""

from __future__ import annotations

from typing import Any

_CDEF = """
typedef struct nghttp2_session nghttp2_session;
typedef struct nghttp2_session_callbacks nghttp2_session_callbacks;
typedef struct nghttp2_option nghttp2_option;

typedef struct {
  int age; int version_num; const char *version_str; const char *proto_str;
} nghttp2_info;

typedef struct {
  char *name; char *value; size_t namelen; size_t valuelen; uint8_t flags;
} nghttp2_nv;

typedef struct {
  size_t length; int32_t stream_id; uint8_t type; uint8_t flags; uint8_t reserved;
} nghttp2_frame_hd;

typedef struct { int32_t stream_id; int32_t weight; uint8_t exclusive; } nghttp2_priority_spec;

typedef struct {
  nghttp2_frame_hd hd; size_t padlen; nghttp2_priority_spec pri_spec;
  nghttp2_nv *nva; size_t nvlen; int cat;
} nghttp2_headers;

typedef struct { nghttp2_frame_hd hd; uint32_t error_code; } nghttp2_rst_stream;

typedef union {
  nghttp2_frame_hd hd; nghttp2_headers headers; nghttp2_rst_stream rst_stream;
} nghttp2_frame;

typedef union { int fd; void *ptr; } nghttp2_data_source;

typedef ssize_t (*nghttp2_data_source_read_callback)(
    nghttp2_session *, int32_t, char *, size_t, uint32_t *, nghttp2_data_source *, void *);

typedef struct {
  nghttp2_data_source source; nghttp2_data_source_read_callback read_callback;
} nghttp2_data_provider;

typedef struct { int32_t settings_id; uint32_t value; } nghttp2_settings_entry;

nghttp2_info *nghttp2_version(int least_version);
const char *nghttp2_strerror(int lib_error_code);

int nghttp2_session_callbacks_new(nghttp2_session_callbacks **callbacks_ptr);
void nghttp2_session_callbacks_set_on_begin_frame_callback(nghttp2_session_callbacks *,
    int (*)(nghttp2_session *, const nghttp2_frame_hd *, void *));
void nghttp2_session_callbacks_set_on_begin_headers_callback(nghttp2_session_callbacks *,
    int (*)(nghttp2_session *, const nghttp2_frame *, void *));
void nghttp2_session_callbacks_set_on_header_callback(nghttp2_session_callbacks *,
    int (*)(nghttp2_session *, const nghttp2_frame *, const char *, size_t, const char *,
            size_t, uint8_t, void *));
void nghttp2_session_callbacks_set_on_invalid_header_callback(nghttp2_session_callbacks *,
    int (*)(nghttp2_session *, const nghttp2_frame *, const char *, size_t, const char *,
            size_t, uint8_t, void *));
void nghttp2_session_callbacks_set_on_frame_recv_callback(nghttp2_session_callbacks *,
    int (*)(nghttp2_session *, const nghttp2_frame *, void *));
void nghttp2_session_callbacks_set_on_data_chunk_recv_callback(nghttp2_session_callbacks *,
    int (*)(nghttp2_session *, uint8_t, int32_t, const char *, size_t, void *));
void nghttp2_session_callbacks_set_on_stream_close_callback(nghttp2_session_callbacks *,
    int (*)(nghttp2_session *, int32_t, uint32_t, void *));

int nghttp2_option_new(nghttp2_option **option_ptr);
void nghttp2_option_del(nghttp2_option *option);
void nghttp2_option_set_no_auto_window_update(nghttp2_option *option, int val);
void nghttp2_option_set_max_outbound_ack(nghttp2_option *option, size_t val);
void nghttp2_option_set_max_settings(nghttp2_option *option, size_t val);
void nghttp2_option_set_max_send_header_block_length(nghttp2_option *option, size_t val);

int nghttp2_session_server_new2(nghttp2_session **session_ptr,
    const nghttp2_session_callbacks *callbacks, void *user_data, const nghttp2_option *option);
void nghttp2_session_del(nghttp2_session *session);
ssize_t nghttp2_session_mem_recv(nghttp2_session *session, const char *in, size_t inlen);
ssize_t nghttp2_session_mem_send(nghttp2_session *session, const char **data_ptr);
int nghttp2_session_resume_data(nghttp2_session *session, int32_t stream_id);
int nghttp2_session_want_read(nghttp2_session *session);
int nghttp2_session_want_write(nghttp2_session *session);
int nghttp2_session_consume(nghttp2_session *session, int32_t stream_id, size_t size);
int nghttp2_session_set_local_window_size(nghttp2_session *session, uint8_t flags,
    int32_t stream_id, int32_t window_size);
int32_t nghttp2_session_get_last_proc_stream_id(nghttp2_session *session);
int nghttp2_session_terminate_session2(nghttp2_session *session, int32_t last_stream_id,
    uint32_t error_code);

int nghttp2_submit_settings(nghttp2_session *session, uint8_t flags,
    const nghttp2_settings_entry *iv, size_t niv);
int nghttp2_submit_response(nghttp2_session *session, int32_t stream_id,
    const nghttp2_nv *nva, size_t nvlen, const nghttp2_data_provider *data_prd);
int32_t nghttp2_submit_headers(nghttp2_session *session, uint8_t flags, int32_t stream_id,
    const nghttp2_priority_spec *pri_spec, const nghttp2_nv *nva, size_t nvlen,
    void *stream_user_data);
int nghttp2_submit_trailer(nghttp2_session *session, int32_t stream_id,
    const nghttp2_nv *nva, size_t nvlen);
int nghttp2_submit_rst_stream(nghttp2_session *session, uint8_t flags, int32_t stream_id,
    uint32_t error_code);
int nghttp2_submit_goaway(nghttp2_session *session, uint8_t flags, int32_t last_stream_id,
    uint32_t error_code, const char *opaque_data, size_t opaque_data_len);
"""

# --- constants of nghttp2.h (stable ABI values) ------------------------------------------------
ERR_DEFERRED = -508
ERR_TEMPORAL_CALLBACK_FAILURE = -521
ERR_CALLBACK_FAILURE = -902
ERR_FLOODED = -904
ERR_TOO_MANY_CONTINUATIONS = -905
DATA_FLAG_EOF = 0x01
DATA_FLAG_NO_END_STREAM = 0x02
FLAG_END_STREAM = 0x01
FLAG_ACK = 0x01
HCAT_REQUEST = 0

DATA, HEADERS, RST_STREAM, SETTINGS, PING, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x9

SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR = 0x0, 0x1, 0x2
REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 0x7, 0x8, 0xB

#: the library's file name (the ABI this module's declarations describe)
SONAME = "libnghttp2.so.14"
#: oldest version whose API the engine uses (server_new2, mem_send, options above)
MIN_VERSION = 0x013400  # 1.52.0

_loaded: tuple[Any, Any] | None = None
_tried = False


def load() -> tuple[Any, Any] | None:
    """``(ffi, lib)`` of libnghttp2, or ``None`` when cffi or the library is unavailable
    (or older than :data:`MIN_VERSION`). Loaded once per process."""
    global _loaded, _tried
    if _tried:
        return _loaded
    _tried = True
    try:
        import cffi  # type: ignore[import-untyped]

        ffi = cffi.FFI()
        ffi.cdef(_CDEF)
        lib = ffi.dlopen(SONAME)
        if lib.nghttp2_version(MIN_VERSION) == ffi.NULL:
            return None
    except (ImportError, OSError, AttributeError):
        return None
    _loaded = (ffi, lib)
    return _loaded


def version() -> str:
    """The loaded library's version string ('' when it is not available)."""
    got = load()
    if got is None:
        return ""
    ffi, lib = got
    return str(ffi.string(lib.nghttp2_version(0).version_str).decode("ascii"))


__all__ = ["load", "version"]

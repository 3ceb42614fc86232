"""Which HTTP/2 server engine serves (``http/h2engine.py``): libnghttp2 when it loads, the
``h2`` library otherwise, and what ``PORTWAY_H2_ENGINE`` forces."""

from __future__ import annotations

import pytest

from portway.http import h2engine, ng2lib
from tests.helpers import skip_without_nghttp2


def test_nghttp2_missing_falls_back_to_h2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ng2lib, "_tried", True)
    monkeypatch.setattr(ng2lib, "_loaded", None)
    monkeypatch.delenv("PORTWAY_H2_ENGINE", raising=False)
    assert h2engine.engine() == "h2"
    monkeypatch.setenv("PORTWAY_H2_ENGINE", "nghttp2")
    with pytest.raises(RuntimeError):
        h2engine.engine()


def test_env_forces_an_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTWAY_H2_ENGINE", "h2")
    assert h2engine.engine() == "h2"
    if ng2lib.load() is None:
        skip_without_nghttp2()
    monkeypatch.setenv("PORTWAY_H2_ENGINE", "nghttp2")
    assert h2engine.engine() == "nghttp2"
    monkeypatch.delenv("PORTWAY_H2_ENGINE")
    assert h2engine.engine() == "nghttp2"


def test_goaway_bytes_match_the_h2_engine() -> None:
    from portway.http.h2guard import goaway_bytes

    assert h2engine.goaway_bytes() == goaway_bytes()
    assert h2engine.goaway_bytes(11) == goaway_bytes(11)


def _nghttp2_checks() -> tuple[object, object]:
    """libnghttp2's own field checks (the ones its session applies to every regular field
    before ``on_header``; a field failing them goes to ``on_invalid_header``), through a
    cffi instance of this test's own."""
    if ng2lib.load() is None:
        skip_without_nghttp2()
    import cffi  # type: ignore[import-untyped]

    ffi = cffi.FFI()
    ffi.cdef(
        "int nghttp2_check_header_name(const char *name, size_t len);"
        "int nghttp2_check_header_value_rfc9113(const char *value, size_t len);"
    )
    lib = ffi.dlopen(ng2lib.SONAME)
    return (
        lambda b: lib.nghttp2_check_header_name(b, len(b)) == 1,
        lambda b: lib.nghttp2_check_header_value_rfc9113(b, len(b)) == 1,
    )


def test_fields_nghttp2_accepts_pass_our_rules() -> None:
    """``ng2`` skips ``check_fields`` for a request whose every field nghttp2 accepted
    (``check_head(fields_checked=True)``): that is only sound while nghttp2's checks are at
    least ours. Both are per byte (and, for values, the first and last byte): every byte in
    every position."""
    from portway.http.validate import field_problem

    name_ok, value_ok = _nghttp2_checks()
    assert not name_ok(b"")  # type: ignore[operator]
    for b in range(256):
        c = bytes([b])
        for name in (c, b"a" + c, c + b"a", b"a" + c + b"a"):
            if name.startswith(b":"):
                continue  # a pseudo-header (nghttp2's own rules; never a regular field)
            if name_ok(name):  # type: ignore[operator]
                assert field_problem(name, b"v", h2=True) is None, name
        for value in (c, b"a" + c, c + b"a", b"a" + c + b"a"):
            if value_ok(value):  # type: ignore[operator]
                assert field_problem(b"x", value, h2=True) is None, value


def test_nghttp2_field_validation_self_check() -> None:
    """The nghttp2 engine skips our field rules for a block nghttp2 accepted whole only if
    the loaded library's session, probed once at load, keeps every field of ``_INVALID``
    (each one our rules refuse) from ``on_header``. It does here; and the probe tells: with
    a field that is in fact valid among the "invalid" ones, it fails."""
    if ng2lib.load() is None:
        skip_without_nghttp2()
    from portway.http import ng2cb
    from portway.http.validate import field_problem

    for name, value in ng2cb._INVALID:
        assert field_problem(name, value, h2=True) is not None, (name, value)
    assert ng2cb.fields_validated
    assert ng2cb.probe_field_checks(ng2cb.OPTION)
    assert not ng2cb.probe_field_checks(ng2cb.OPTION, (*ng2cb._INVALID, (b"x-q", b"fine")))

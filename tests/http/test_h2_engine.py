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

"""The HTTP tests run with the connection state machines strict: an illegal transition
(a state table that no longer describes the code) raises instead of being logged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from portway.http.serverstate import TRACE
from tests.helpers import skip_without_nghttp2


@pytest.fixture(autouse=True)
def _strict_states() -> Iterator[None]:
    before = TRACE.strict
    TRACE.strict = True
    yield
    TRACE.strict = before


@pytest.fixture(params=["nghttp2", "h2"])
def h2_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on each HTTP/2 server engine (``http/h2engine.py``): libnghttp2 (skipped
    when it does not load) and the ``h2`` library."""
    engine = str(request.param)
    if engine == "nghttp2":
        from portway.http import ng2lib

        if ng2lib.load() is None:
            skip_without_nghttp2()
    monkeypatch.setenv("PORTWAY_H2_ENGINE", engine)
    return engine

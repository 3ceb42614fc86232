"""The HTTP tests run with the connection state machines strict: an illegal transition
(a state table that no longer describes the code) raises instead of being logged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from portway.http.serverstate import TRACE


@pytest.fixture(autouse=True)
def _strict_states() -> Iterator[None]:
    before = TRACE.strict
    TRACE.strict = True
    yield
    TRACE.strict = before

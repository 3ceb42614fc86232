"""Fixtures for cache tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

import pytest

from portway.http.headers import Headers
from portway.http.models import Request, Response
from portway.pipeline.context import RequestContext


@pytest.fixture
def cache_redis_url(request: pytest.FixtureRequest) -> str:
    """The suite's ``redis_url`` fixture when tests/conftest.py provides it."""
    try:
        return str(request.getfixturevalue("redis_url"))
    except pytest.FixtureLookupError:
        return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def prefix() -> str:
    return f"test:cache:{uuid.uuid4().hex[:12]}:"


def make_request(
    method: str = "GET",
    path: str = "/r",
    query: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    host: str = "example.com",
) -> Request:
    return Request(
        method=method,
        path=path,
        query=query,
        headers=Headers.from_pairs(headers or []),
        host=host,
    )


def make_ctx(
    method: str = "GET",
    path: str = "/r",
    query: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
) -> RequestContext:
    return RequestContext(make_request(method, path, query, headers))


def upstream_response(
    status: int = 200, headers: list[tuple[str, str]] | None = None, body: bytes = b"hello"
) -> Response:
    return Response(status=status, headers=Headers.from_pairs(headers or []), body=body, upstream=True)


CtxFactory = Callable[..., RequestContext]

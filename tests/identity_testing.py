"""Helpers for tests and benchmarks of the identity plugins (not used at run time).

``make_context`` builds a real :class:`RequestContext` without a server; ``make_env`` builds a
:class:`PluginEnv` whose consumer directory comes from ``consumers:``-shaped dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from portway.config.schema import ConsumerConfig
from portway.http.headers import Headers
from portway.http.models import Request
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import PluginEnv


def make_context(
    path: str = "/",
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    query: bytes = b"",
    client_ip: str = "127.0.0.1",
) -> RequestContext:
    req = Request(
        method=method,
        path=path,
        query=query,
        headers=Headers.from_pairs(headers),
        host="gateway.test",
        client_ip=client_ip,
    )
    return RequestContext(req, request_id="test")


def make_env(consumers: Sequence[dict[str, Any]] = (), route: str | None = None) -> PluginEnv:
    from portway.runtime.consumers import build_consumer_directory

    directory = build_consumer_directory([ConsumerConfig.model_validate(c) for c in consumers])
    return PluginEnv(route=route, consumers=directory)

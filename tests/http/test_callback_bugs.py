"""Issue 15 point 8: a bug in Portway raised inside an upstream parser callback is a logged
500 with its traceback, never blamed on the target (no 502 "invalid response", no passive
health mark), on the general path (cold pool) and the task-free path (warm pool)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from tests.helpers import http_get, raw_request, raw_upstream, run_gateway
from tests.http.adv_helpers import parse_responses


def _cfg(url: str) -> dict[str, Any]:
    return {
        "upstreams": {
            "u": {
                "targets": [{"url": url}],
                "health": {"passive": {"unhealthy_after": 1, "recover_after": "60s"}},
            }
        },
        "routes": [{"name": "r", "match": {"paths": ["/"]}, "upstream": "u"}],
    }


class _Boom(Exception):
    """Stands in for a Portway bug: raises a TypeError where the response parser's module
    (``http/clientparse.py``) builds its "unsupported transfer coding" error, inside its
    callback. (Patched as a module global, which compiled code looks up too: compiled
    classes cannot be patched.)"""

    def __init__(self, *_: Any) -> None:
        raise TypeError("a bug in a callback")


@pytest.mark.parametrize("warm", [False, True], ids=["general", "task_free"])
async def test_bug_in_a_response_callback_is_a_500_not_an_upstream_failure(
    warm: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from portway.http import clientparse

    async def handler(head: bytes, w: Any, n: int) -> bool:
        if b"/gzip" in head:
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
        else:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        return True

    async with raw_upstream(handler) as url, run_gateway(_cfg(url)) as gw:
        app = gw.worker.app
        assert app is not None
        if warm:
            assert (await http_get(gw.url + "/warm"))[0] == 200
        monkeypatch.setattr(clientparse, "UpstreamProtocolError", _Boom)
        before = app.fast_requests
        with caplog.at_level(logging.ERROR):
            out = await raw_request(
                gw.port, b"GET /gzip HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
        resp = parse_responses(out)[0]
        assert resp.status == 500, out
        body = orjson.loads(resp.body)
        assert body["code"] == "internal_error" and body["request_id"]
        assert (app.fast_requests > before) == warm
        assert any(
            r.exc_info and "a bug in a callback" in str(r.exc_info[1]) for r in caplog.records
        )
        monkeypatch.undo()
        # the target was not marked down (unhealthy_after: 1 would answer 503 now)
        target = gw.gateway.graph.upstreams["u"].targets[0]
        for _ in range(2):
            assert (await http_get(gw.url + "/after"))[0] == 200
        assert target.in_flight == 0

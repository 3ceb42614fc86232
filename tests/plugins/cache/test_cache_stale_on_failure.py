"""Stale-if-error when the origin fails at the transport level, through a real gateway.

A connect failure, a reset, a close in the middle of the response head and a read timeout
count like a 5xx: the stored response is served when stale-if-error (the response's, or the
plugin's default window) allows it, and never when must-revalidate, proxy-revalidate,
no-cache or s-maxage forbid serving it stale.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from tests.helpers import free_port, http_get, raw_upstream, run_gateway

FAILURES = ["refused", "close", "reset", "midhead", "timeout"]


class Origin:
    """Answers ``good`` with ``cache_control`` until ``failure`` is set, then fails that way."""

    def __init__(self, cache_control: str) -> None:
        self.cache_control = cache_control
        self.failure = ""
        self.failed = asyncio.Event()
        #: set when the test is done with a hanging answer
        self.release = asyncio.Event()

    async def __call__(self, head: bytes, w: asyncio.StreamWriter, n: int) -> bool:
        if not self.failure:
            cc = self.cache_control.encode()
            # already stale when stored (Age beyond max-age); the ETag keeps it stored for
            # revalidation even where no stale window applies
            w.write(
                b'HTTP/1.1 200 OK\r\nCache-Control: %b\r\nAge: 10\r\nETag: "v1"\r\n'
                b"Content-Length: 4\r\n\r\ngood" % cc
            )
            await w.drain()
            return True
        self.failed.set()
        if self.failure == "reset":
            w.transport.abort()
        elif self.failure == "midhead":
            w.write(b"HTTP/1.1 200 OK\r\nCache-Con")
            await w.drain()
        elif self.failure == "timeout":
            # hang past the gateway's read timeout, until the test has its answer
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 5)
        return False


def gateway_config(url: str, **cache: Any) -> dict[str, Any]:
    return {
        "upstreams": {
            "u": {
                "targets": [{"url": url}],
                "timeouts": {"connect": "1s", "read": "300ms", "total": "2s"},
                "retries": {"attempts": 1},
            }
        },
        "routes": [
            {
                "name": "c",
                "match": {"paths": ["/"]},
                "upstream": "u",
                "plugins": [{"name": "cache", "config": cache}],
            }
        ],
    }


async def fail_after_stale(
    cache_control: str, failure: str, **cache: Any
) -> tuple[int, str | None, bytes]:
    """Store a response that is already stale, make the origin fail, ask again."""
    origin = Origin(cache_control)
    port = free_port()
    async with raw_upstream(origin) as url:
        cfg = gateway_config(url, **cache)
        async with run_gateway(cfg) as gw:
            s, h, b = await http_get(gw.url + "/x")
            assert (s, b, h.get("x-cache")) == (200, b"good", "MISS")
            if failure == "refused":
                # a target nothing listens on; the route and the plugin config are unchanged,
                # so the store (and the stale copy) survive the reload
                cfg["upstreams"]["u"]["targets"] = [{"url": f"http://127.0.0.1:{port}"}]
                await gw.reload(cfg)
            else:
                origin.failure = failure
            s, h, b = await http_get(gw.url + "/x")
            origin.release.set()
            if failure != "refused":
                assert origin.failed.is_set()  # the stale copy was sent for validation
            return s, h.get("x-cache"), b


@pytest.mark.parametrize("failure", FAILURES)
async def test_explicit_stale_if_error_covers_transport_failures(failure: str) -> None:
    got = await fail_after_stale("max-age=1, stale-if-error=60", failure)
    assert got == (200, "STALE", b"good")


@pytest.mark.parametrize("failure", ["refused", "reset", "midhead"])
async def test_default_window_covers_transport_failures(failure: str) -> None:
    got = await fail_after_stale("max-age=1", failure, stale_if_error="60s")
    assert got == (200, "STALE", b"good")


async def test_without_a_window_the_failure_is_reported() -> None:
    status, _, _ = await fail_after_stale("max-age=1, must-revalidate", "reset")
    assert status == 502


@pytest.mark.parametrize(
    "cache_control",
    [
        "max-age=1, stale-if-error=60, must-revalidate",
        "max-age=1, stale-if-error=60, proxy-revalidate",
        "max-age=1, stale-if-error=60, no-cache",
    ],
)
@pytest.mark.parametrize("failure", ["reset", "midhead"])
async def test_directives_that_forbid_stale_still_do(cache_control: str, failure: str) -> None:
    status, _, body = await fail_after_stale(cache_control, failure, stale_if_error="60s")
    assert status == 502 and body != b"good"


@pytest.mark.parametrize("failure", ["reset", "midhead"])
async def test_s_maxage_forbids_the_default_window(failure: str) -> None:
    status, _, body = await fail_after_stale("max-age=1, s-maxage=1", failure, stale_if_error="60s")
    assert status == 502 and body != b"good"

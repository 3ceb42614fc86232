"""``request_id`` through a real gateway: accept, replace, echo, forward, log."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import orjson

from tests.helpers import ServingPath, http_get, run_gateway, run_upstream, simple_config

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _sent(body: bytes, name: str = "x-request-id") -> list[str]:
    return [v for k, v in orjson.loads(body)["headers"] if k == name]


async def _log_lines(path: Path, n: int) -> list[dict[str, object]]:
    for _ in range(200):
        if path.exists():
            lines = path.read_bytes().splitlines()
            if len(lines) >= n:
                return [orjson.loads(x) for x in lines]
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {n} access-log lines in {path}")


async def test_accepts_safe_id_replaces_unsafe_echoes_forwards_and_logs(
    tmp_path: Path, path: ServingPath
) -> None:
    log = tmp_path / "access.log"
    async with run_upstream() as up:
        # bound on the route, so the warm-up request (another route) is not logged
        cfg = simple_config(
            up.url,
            plugins=[
                {"name": "request_id"},
                {"name": "access_log", "config": {"path": str(log)}},
            ],
        )
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)
            safe = "abc-123.DEF_4:5"
            s1, h1, b1 = await http_get(gw.url + "/a", headers=[("X-Request-ID", safe)])
            unsafe = "evil id\t<script>"
            s2, h2, b2 = await http_get(gw.url + "/b", headers=[("X-Request-ID", unsafe)])
            too_long = "a" * 129
            s3, h3, b3 = await http_get(gw.url + "/c", headers=[("X-Request-ID", too_long)])
            s4, h4, b4 = await http_get(gw.url + "/d")
            lines = await _log_lines(log, 4)
            path.assert_served(4)
    assert s1 == s2 == s3 == s4 == 200
    assert h1.get("x-request-id") == safe and _sent(b1) == [safe]
    for h, b in ((h2, b2), (h3, b3), (h4, b4)):
        rid = h.get("x-request-id")
        assert rid is not None and HEX32.match(rid)
        assert _sent(b) == [rid]  # exactly one id upstream: the unsafe one is not forwarded
    ids = [h.get("x-request-id") for h in (h1, h2, h3, h4)]
    assert len(set(ids)) == 4
    assert sorted(str(x["request_id"]) for x in lines) == sorted(str(i) for i in ids)


async def test_id_is_on_gateway_errors_and_custom_header(tmp_path: Path) -> None:
    async with run_upstream() as up:
        cfg = simple_config(up.url)
        cfg["plugins"] = [{"name": "request_id", "config": {"header": "X-Correlation-ID"}}]
        cfg["routes"].append(
            {
                "name": "down",
                "match": {"paths": ["=/down"]},
                "plugins": [{"name": "request_termination", "config": {"status": 503}}],
            }
        )
        async with run_gateway(cfg) as gw:
            s1, h1, b1 = await http_get(gw.url + "/x", headers=[("x-correlation-id", "corr-1")])
            s2, h2, b2 = await http_get(gw.url + "/down", headers=[("x-correlation-id", "c-2")])
    assert s1 == 200 and h1.get("x-correlation-id") == "corr-1"
    assert _sent(b1, "x-correlation-id") == ["corr-1"]
    assert h1.get("x-request-id") is None
    assert s2 == 503 and h2.get("x-correlation-id") == "c-2"
    assert orjson.loads(b2)["request_id"] == "c-2"


async def test_untrusted_incoming_and_no_echo() -> None:
    async with run_upstream() as up:
        cfg = simple_config(
            up.url,
            plugins=[{"name": "request_id", "config": {"trust_incoming": False, "echo": False}}],
        )
        async with run_gateway(cfg) as gw:
            s, h, b = await http_get(gw.url + "/x", headers=[("x-request-id", "client-id")])
    assert s == 200 and h.get("x-request-id") is None
    (sent,) = _sent(b)
    assert sent != "client-id" and HEX32.match(sent)


def test_generated_ids_are_unique_hex_across_random_blocks() -> None:
    import re

    from portway.plugins.request_id.hooks import BLOCK, new_id

    ids = [new_id() for _ in range(3 * BLOCK // 16 + 7)]  # several blocks
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(rb"[0-9a-f]{32}", i) for i in ids)


def test_a_forked_child_never_repeats_the_parents_ids() -> None:
    import os

    from portway.plugins.request_id.hooks import new_id

    new_id()  # the parent holds a block with unused ids
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        try:
            os.write(w, new_id())
        finally:
            os._exit(0)
    os.close(w)
    child = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != new_id()


def test_the_hooks_copy_the_shared_request_before_adding_the_id() -> None:
    from portway.http.headers import Headers
    from portway.http.models import Request
    from portway.pipeline.context import RequestContext
    from portway.pipeline.runner import Chain
    from portway.plugins.request_id.plugin import RequestIdConfig, RequestIdPlugin

    p = RequestIdPlugin(RequestIdConfig(), None)
    assert p.copies_on_edit and p.fast_hooks is not None
    chain = Chain([p])
    assert chain.sets_id_first and not chain.copies_upstream_request
    assert chain.watch is not None and chain.watch.names == {b"x-request-id"}
    sent = [("accept", "*/*"), ("x-request-id", "bad id!"), ("b", "2")]
    req = Request("GET", "/", b"", Headers.from_pairs(sent))
    ctx = RequestContext(req, copy=False, id_set=True)
    before = list(req.headers.raw())
    p.fast_hooks.request(ctx)
    assert ctx.upstream_request is not req and req.headers.raw() == before
    rid = ctx.request_id.encode()
    assert re.fullmatch(rb"[0-9a-f]{32}", rid)
    assert ctx.upstream_request.headers.raw() == [
        (b"accept", b"*/*"),
        (b"b", b"2"),
        (b"x-request-id", rid),
    ]
    # an upstream copy already made is edited in place, to the same fields
    ref = RequestContext(req)
    p.fast_hooks.request(ref)
    assert [k for k, _ in ref.upstream_request.headers.raw()] == [b"accept", b"b", b"x-request-id"]

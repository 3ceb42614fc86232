"""``access_log`` through a real gateway: fields, file and stdout output, reopen after
rotation, and a full queue that drops lines instead of blocking the event loop."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from portway.http.headers import Headers
from portway.http.models import Request
from portway.pipeline.context import RequestContext
from portway.pipeline.plugin import PluginEnv
from portway.plugins.access_log.plugin import AccessLogConfig, AccessLogPlugin, reopen_all
from tests.helpers import (
    ServingPath,
    free_port,
    http_get,
    run_gateway,
    run_upstream,
    simple_config,
)

FIELDS: dict[str, type | tuple[type, ...]] = {
    "time": str,
    "request_id": str,
    "client_ip": str,
    "method": str,
    "path": str,
    "route": str,
    "upstream": str,
    "target": str,
    "status": int,
    "bytes_in": int,
    "bytes_out": int,
    "latency_ms": (int, float),
    "upstream_latency_ms": (int, float),
    "user_agent": str,
    "consumer": type(None),
    "variant": type(None),
}


async def _lines(path: Path, n: int, timeout: float = 3.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            raw = path.read_bytes().splitlines()
            if len(raw) >= n:
                return [orjson.loads(x) for x in raw]
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path}: fewer than {n} lines")


def _cfg(up_url: str, path: str, **extra: Any) -> dict[str, Any]:
    cfg = simple_config(up_url)
    cfg["plugins"] = [
        {"name": "request_id"},
        {"name": "access_log", "config": {"path": path, **extra}},
    ]
    return cfg


async def test_every_field_present_and_typed(tmp_path: Path, path: ServingPath) -> None:
    log = tmp_path / "access.log"
    async with run_upstream() as up:
        cfg = _cfg(up.url, str(log))
        # bound on the route, so the warm-up request (another route) is not logged
        cfg["routes"][0]["plugins"] = cfg.pop("plugins")
        async with run_gateway(path.config(cfg)) as gw:
            await path.prepare(gw)
            status, h, body = await http_get(
                gw.url + "/items/1?q=2", headers=[("user-agent", "probe/1.0")]
            )
            (rec,) = await _lines(log, 1)
            path.assert_served(1)
    assert status == 200
    assert set(rec) == set(FIELDS)
    for k, t in FIELDS.items():
        assert isinstance(rec[k], t), (k, rec[k])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["time"])
    assert rec["request_id"] == h.get("x-request-id")
    assert rec["client_ip"] == "127.0.0.1"
    assert (rec["method"], rec["path"], rec["route"], rec["upstream"]) == (
        "GET",
        "/items/1",
        "r",
        "u",
    )
    assert rec["target"].endswith(str(up.port))
    assert rec["status"] == 200 and rec["user_agent"] == "probe/1.0"
    assert rec["bytes_in"] == 0 and rec["bytes_out"] > len(body)
    assert 0 <= rec["upstream_latency_ms"] <= rec["latency_ms"] < 5000


async def test_errors_and_request_bodies_are_logged(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = _cfg(dead, str(log))
    cfg["upstreams"]["u"]["retries"] = {"attempts": 1}
    async with run_gateway(cfg) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        recs = await _lines(log, 1)
    assert head.startswith(b"HTTP/1.1 502")
    rec = recs[0]
    assert rec["status"] == 502 and rec["method"] == "POST" and rec["upstream"] == "u"
    assert rec["user_agent"] is None and rec["upstream_latency_ms"] is None
    assert rec["bytes_in"] in (0, 5)  # the body may not be read when no upstream took it


async def test_stdout_output(capfd: pytest.CaptureFixture[str]) -> None:
    async with run_upstream() as up:
        async with run_gateway(_cfg(up.url, "-")) as gw:
            await http_get(gw.url + "/to-stdout")
            # the writer thread's line, waited for (not slept for)
            out = ""
            deadline = time.monotonic() + 5
            while "/to-stdout" not in out:
                assert time.monotonic() < deadline, out
                await asyncio.sleep(0.01)
                out += capfd.readouterr().out
    out += capfd.readouterr().out
    recs = [orjson.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert [r["path"] for r in recs] == ["/to-stdout"]


async def test_reopen_after_rename_by_signal_and_by_itself(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with run_upstream() as up:
        async with run_gateway(_cfg(up.url, str(log))) as gw:
            await http_get(gw.url + "/one")
            await _lines(log, 1)
            os.rename(log, tmp_path / "access.log.1")
            reopen_all()  # what SIGUSR1 does after logrotate
            await http_get(gw.url + "/two")
            assert [r["path"] for r in await _lines(log, 1)] == ["/two"]
            # without a signal: the writer notices the path now names another file
            os.rename(log, tmp_path / "access.log.2")
            await asyncio.sleep(1.1)
            await http_get(gw.url + "/three")
            assert [r["path"] for r in await _lines(log, 1)] == ["/three"]
    assert [r["path"] for r in await _lines(tmp_path / "access.log.1", 1)] == ["/one"]
    assert [r["path"] for r in await _lines(tmp_path / "access.log.2", 1)] == ["/two"]


async def test_full_queue_drops_and_counts_without_blocking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a FIFO nobody reads: the writer thread blocks once the pipe buffer is full
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    plugin = AccessLogPlugin(AccessLogConfig(path=str(fifo), max_queue=100), PluginEnv())
    writer = plugin._writer.writer
    req = Request(method="GET", path="/" + "x" * 2000, query=b"", headers=Headers())
    try:
        # ~2000 lines x 2 KB fill the pipe long before the end: a put() that waited would
        # never return (nobody reads until below), and the test's timeout would fail it
        for _ in range(2000):
            plugin.on_log(RequestContext(req))
        assert writer.dropped > 0 and writer.pending <= 100
        # drain the pipe: the writer catches up and reports the drops
        got = b""
        deadline = time.monotonic() + 60  # a loaded CI machine's writer thread is slow
        while time.monotonic() < deadline and writer.written + writer.dropped < 2000:
            try:
                got += os.read(rfd, 1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.01)
        assert writer.pending == 0
        assert writer.written + writer.dropped == 2000
        while True:  # what the last write left in the pipe buffer
            try:
                data = os.read(rfd, 1 << 20)
            except BlockingIOError:
                break
            if not data:
                break
            got += data
        assert got.count(b"\n") == writer.written
    finally:
        await plugin._writer.aclose()
        os.close(rfd)
    assert any("dropped" in r.getMessage() for r in caplog.records)


def test_unwritable_path_fails_the_build(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        AccessLogPlugin(AccessLogConfig(path=str(tmp_path / "missing-dir" / "a.log")), PluginEnv())


def test_config_validation() -> None:
    text = "plugins: [{name: access_log, config: {max_queue: 5, format: apache}}]\n"
    with pytest.raises(ConfigError) as ei:
        load_config_text(text, "c.yaml")
    errors = " ".join(str(e) for e in ei.value.errors)
    assert "max_queue" in errors and "format" in errors


def test_line_quotes_what_json_must_escape() -> None:
    """The line is spelled by hand (line.py): strings the client controls still come out as
    valid JSON whatever they hold, decoding to the same values."""
    from portway.plugins.access_log.line import LineFormatter, ms3, quote

    odd = ["plain", 'q"uote', "back\\slash", "tab\there", "nul\x00", "del\x7f", "é ü", "\u2028"]
    for s in odd:
        assert orjson.loads(quote(s)) == s
    assert [ms3(x) for x in (0.0, 4e-7, 6e-7, 0.012345, 1.5, -1.0)] == [
        "0.000",
        "0.000",
        "0.001",
        "12.345",
        "1500.000",
        "0.000",
    ]
    h = Headers([(b"user-agent", 'agent "x" \\ é'.encode("latin-1"))])
    req = Request(method="GET", path='/a"b\\c', query=b"", headers=h, client_ip="10.0.0.1")
    ctx = RequestContext(req)
    ctx.request_id = "r1"
    ctx.extra["graphql_operation"] = 'Op"1'
    line = LineFormatter().line(ctx)
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    rec = orjson.loads(line)
    assert list(rec) == [*FIELDS, "graphql_operation"]
    assert rec["path"] == '/a"b\\c' and rec["user_agent"] == 'agent "x" \\ é'
    assert rec["request_id"] == "r1" and rec["client_ip"] == "10.0.0.1"
    assert rec["status"] == 499 and rec["route"] is None and rec["graphql_operation"] == 'Op"1'


def test_inner_is_the_quoted_string_without_its_quotes() -> None:
    """``inner`` (the line's f-string adds the quotes) spells what ``orjson.dumps`` does, and
    ``plain`` says exactly when a string holds something JSON must escape."""
    import re

    from portway.plugins.access_log.line import inner, plain

    must = re.compile('[\\x00-\\x1f"\\\\]')
    odd = ["", "plain", "/api/items?x=1", 'q"uote', "back\\slash", "tab\there", "nul\x00"]
    odd += ["del\x7f", "é ü", "\u2028", "\x1f", " ", "0123456789abcdef" * 2]
    for s in odd:
        assert plain(s) == (must.search(s) is None)
        assert '"' + inner(s) + '"' == orjson.dumps(s).decode()

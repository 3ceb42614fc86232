"""Structured JSON logs, request id context, reopen on SIGUSR1."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from portway.observability.logging import (
    JsonFormatter,
    bind_request_id,
    install_reopen_signal,
    reopen_log_files,
    setup_logging,
)


@pytest.fixture
def reset_logging() -> Iterator[None]:
    # a RequestContext built by an earlier test in this thread leaves its id current
    from portway.pipeline.context import request_id_var

    token = request_id_var.set(None)
    yield
    request_id_var.reset(token)
    log = logging.getLogger("portway")
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    log.propagate = True
    log.setLevel(logging.NOTSET)


def read_lines(p: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def test_json_lines_with_request_id(tmp_path: Path, reset_logging: None) -> None:
    f = tmp_path / "gw.log"
    setup_logging("debug", file=str(f))
    log = logging.getLogger("portway.test")
    log.info("hello %s", "world", extra={"route": "r1"})
    with bind_request_id("req-42"):
        log.warning("inside")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = read_lines(f)
    assert lines[0]["message"] == "hello world"
    assert lines[0]["level"] == "info" and lines[0]["logger"] == "portway.test"
    assert lines[0]["route"] == "r1" and "request_id" not in lines[0]
    assert str(lines[0]["time"]).endswith("+00:00")
    assert lines[1]["request_id"] == "req-42"
    assert "RuntimeError: boom" in str(lines[2]["exc"])


def test_level_filter_and_idempotent_setup(tmp_path: Path, reset_logging: None) -> None:
    f = tmp_path / "gw.log"
    setup_logging("warning", file=str(f))
    setup_logging("warning", file=str(f))
    log = logging.getLogger("portway.x")
    log.info("dropped")
    log.error("kept")
    lines = read_lines(f)
    assert [x["message"] for x in lines] == ["kept"]
    assert len(logging.getLogger("portway").handlers) == 1


def test_text_format(tmp_path: Path, reset_logging: None) -> None:
    f = tmp_path / "gw.log"
    setup_logging("info", file=str(f), json=False)
    with bind_request_id("abc"):
        logging.getLogger("portway.t").info("plain")
    text = f.read_text()
    assert "[abc] plain" in text and "INFO" in text


def test_unknown_level_rejected(reset_logging: None) -> None:
    with pytest.raises(ValueError):
        setup_logging("loud")


def test_unserialisable_extra_is_stringified() -> None:
    rec = logging.LogRecord("portway", logging.INFO, __file__, 1, "m", None, None)
    rec.obj = object()
    out = json.loads(JsonFormatter().format(rec))
    assert out["obj"].startswith("<object object")


async def test_request_id_follows_tasks(tmp_path: Path, reset_logging: None) -> None:
    f = tmp_path / "gw.log"
    setup_logging("info", file=str(f))
    log = logging.getLogger("portway.t")

    async def handle(rid: str) -> None:
        with bind_request_id(rid):
            await asyncio.sleep(0.01)
            log.info("done")

    await asyncio.gather(handle("a"), handle("b"))
    assert sorted(str(x["request_id"]) for x in read_lines(f)) == ["a", "b"]


async def test_reopen_on_sigusr1_after_rotation(tmp_path: Path, reset_logging: None) -> None:
    f = tmp_path / "gw.log"
    setup_logging("info", file=str(f))
    log = logging.getLogger("portway.t")
    log.info("before")
    rotated = tmp_path / "gw.log.1"
    os.rename(f, rotated)
    log.info("still old file")
    loop = asyncio.get_running_loop()
    install_reopen_signal(loop)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if f.exists():
                break
        log.info("after")
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert [x["message"] for x in read_lines(rotated)] == ["before", "still old file"]
    assert [x["message"] for x in read_lines(f)] == ["after"]
    assert reopen_log_files() == 1

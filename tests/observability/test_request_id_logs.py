"""Gateway log lines written while a request runs carry that request's id."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson

from portway.observability.logging import setup_logging
from tests.helpers import http_get, run_gateway, run_upstream, simple_config
from tests.pipeline.test_runner import _b


async def test_plugin_error_log_line_has_request_id(tmp_path: Path) -> None:
    log_file = tmp_path / "gw.log"
    handler = setup_logging("info", str(log_file))
    try:
        async with run_upstream() as up:
            cfg = simple_config(up.url, plugins=[_b("t_b", fail_in="on_request")])
            cfg["plugins"] = [{"name": "request_id"}]
            async with run_gateway(cfg) as gw:
                status, headers, _ = await http_get(
                    gw.url + "/x", headers=[("x-request-id", "req-abc-123")]
                )
        assert status == 500 and headers.get("x-request-id") == "req-abc-123"
        handler.flush()
        lines = [orjson.loads(x) for x in log_file.read_text().splitlines() if x.strip()]
        failing = [x for x in lines if "t_b" in x.get("message", "")]
        assert failing and all(x.get("request_id") == "req-abc-123" for x in failing)
    finally:
        log = logging.getLogger("portway")
        log.removeHandler(handler)
        log.propagate = True  # other tests read records through caplog on the root logger
        log.setLevel(logging.NOTSET)
        handler.close()

"""Schemathesis (every check) against the admin API's own /openapi.json on a real listener."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from portway.admin.app import AdminApp
from portway.admin.server import serve_admin
from portway.config.schema import AdminConfig
from portway.observability.metrics import Metrics
from tests.admin.conftest import TOKEN, FakeControl
from tests.helpers import free_port

CONFIG = Path(__file__).with_name("schemathesis.toml")


async def test_schemathesis_finds_no_failures(tmp_path: Path) -> None:
    app = AdminApp(
        FakeControl(config_path=None),
        AdminConfig.model_validate({"token": TOKEN}),
        metrics=Metrics(include_default_registry=False),
    )
    port = free_port()
    server = await serve_admin(app, "127.0.0.1", port)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(CONFIG),
            "run",
            f"http://127.0.0.1:{port}/openapi.json",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            "all",
            "--max-examples",
            "8",
            "--max-time",
            "18",
            "--workers",
            "1",
            "--seed",
            "20240601",
            "--report-dir",
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        server.close()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "22 selected" in text and "Tested: 22" in text, text[-3000:]

"""examples/grpc/portway.yaml (docs/grpc.md) loads once its descriptor set is built as the
docs say."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from portway.config.loader import load_config_text

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "grpc"


def test_example_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "grpc"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("*.pb", "*_pb2.py"))
    monkeypatch.chdir(work)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iprotos",
            "--python_out=.",
            "--descriptor_set_out=protos/greeter.pb",
            "--include_imports",
            "protos/greeter.proto",
        ],
        check=True,
    )
    cfg = load_config_text((work / "portway.yaml").read_text())
    assert cfg.upstreams["greeter"].protocol == "h2c"
    assert [r.name for r in cfg.routes] == [
        "grpc-pass",
        "greeter-json",
        "greeter-web",
        "legacy-soap",
    ]

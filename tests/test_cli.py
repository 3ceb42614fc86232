"""The ``portway`` command line, run as a user would: real processes, real ``curl``."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portway import __version__
from tests.helpers import free_port

PORTWAY = [sys.executable, "-m", "portway"]
COMMANDS = ["run", "validate", "routes", "demo", "version"]


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PORTWAY, *args], capture_output=True, text=True, timeout=timeout)


def test_help_for_every_command() -> None:
    top = _cli("--help")
    assert top.returncode == 0 and top.stderr == ""
    assert top.stdout.startswith("usage: portway")
    for cmd in COMMANDS:
        assert re.search(rf"^\s+{cmd}\s+\S", top.stdout, re.M), cmd  # listed with a summary
    for cmd in COMMANDS:
        r = _cli(cmd, "--help")
        assert r.returncode == 0 and r.stderr == "", cmd
        assert r.stdout.startswith(f"usage: portway {cmd}"), cmd
        desc = r.stdout.split("\n\n")[1]
        assert len(desc) > 15 and not desc.startswith("options"), (cmd, desc)
    assert "--watch" in _cli("run", "--help").stdout
    assert "PORTWAY_PORT" in _cli("demo", "--help").stdout


def test_version_and_no_command() -> None:
    for args in (["--version"], ["version"]):
        r = _cli(*args)
        assert r.returncode == 0 and r.stdout.strip() == f"portway {__version__}"
    bare = _cli()
    assert bare.returncode == 2 and "usage: portway" in bare.stdout
    wrong = _cli("serve")
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr
    assert "Traceback" not in wrong.stderr


ROUTES = """
upstreams: {u: {targets: [{url: "http://127.0.0.1:1"}]}}
routes:
  - {name: r_regex, match: {paths: ["~^/v[0-9]+/"]}, upstream: u}
  - {name: r_short, match: {paths: ["/a"]}, upstream: u}
  - {name: r_tpl, match: {paths: ["/a/b/{id}"]}, upstream: u}
  - {name: r_long, match: {paths: ["/a/b/c"], methods: [GET, POST]}, upstream: u}
  - {name: r_exact, match: {paths: ["=/a/b"]}, upstream: u}
plugins: [{name: request_id}]
"""


def test_routes_prints_priority_order(tmp_path: Path) -> None:
    cfg = tmp_path / "routes.yaml"
    cfg.write_text(ROUTES)
    r = _cli("routes", str(cfg))
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.strip().splitlines()]
    assert rows[0] == ["#", "ROUTE", "PATH", "HOSTS", "METHODS", "UPSTREAM"]
    # exact, then template/prefix by literal length, then regex
    assert [row[1] for row in rows[1:]] == ["r_exact", "r_long", "r_tpl", "r_short", "r_regex"]
    assert [row[0] for row in rows[1:]] == ["1", "2", "3", "4", "5"]
    assert rows[2] == ["2", "r_long", "/a/b/c", "*", "GET,POST", "u"]


def test_validate_ok_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(ROUTES)
    ok = _cli("validate", str(good))
    assert ok.returncode == 0 and ok.stderr == ""
    assert ok.stdout.strip() == (
        f"{good}: OK — 5 routes, 1 upstreams, 1 global plugins, 0 consumers"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(ROUTES.replace("request_id", "request_idd") + "listeners: 3\n")
    r = _cli("validate", str(bad))
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    first, *errors = r.stderr.strip().splitlines()
    assert first == f"portway: {bad}: invalid config (2 errors)"
    assert any("plugins[0].name" in e and "request_id" in e for e in errors)
    assert any(e.strip().startswith("listeners") for e in errors)
    assert all("line" in e for e in errors)
    missing = _cli("validate", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2 and "config file not found" in missing.stderr
    notyaml = tmp_path / "x.yaml"
    notyaml.write_text("routes: [\n")
    r = _cli("validate", str(notyaml))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "line" in r.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_run_on_occupied_port_fails_with_one_message(tmp_path: Path, workers: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f'listeners: [{{name: public, address: "127.0.0.1:{port}"}}]\n')
        r = _cli("run", "-c", str(cfg), "--workers", workers, timeout=20)
    assert r.returncode == 1 and r.stdout == ""
    assert "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"portway: cannot listen on 127.0.0.1:{port} (listener 'public'): Address already in use"
    )


def test_run_refuses_to_share_a_port_with_a_running_gateway(tmp_path: Path) -> None:
    # a gateway's SO_REUSEPORT socket would otherwise let a second one bind silently
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            f'listeners: [{{address: "127.0.0.1:{free_port()}"}}]\n'
            f'admin: {{address: "127.0.0.1:{port}", auth: false}}\n'
        )
        r = _cli("run", "-c", str(cfg), timeout=20)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"cannot listen on 127.0.0.1:{port} (admin API)" in r.stderr


def _demo_env() -> dict[str, str]:
    env = dict(os.environ)
    for k in (
        "PORTWAY_PORT",
        "PORTWAY_ADMIN_PORT",
        "DEMO_USERS_PORT",
        "DEMO_ORDERS_PORT",
        "DEMO_PRODUCTS_PORT",
        "DEMO_FLAKY_PORT",
    ):
        env[k] = str(free_port())
    return env


def _start_demo(env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [*PORTWAY, "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "Ctrl-C" in line:
            return proc, lines
    proc.kill()
    raise AssertionError(f"demo did not start: {lines} {proc.stderr.read() if proc.stderr else ''}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_demo_answers_every_printed_curl_and_stops_cleanly(sig: signal.Signals) -> None:
    env = _demo_env()
    proc, lines = _start_demo(env)
    try:
        assert f"http://127.0.0.1:{env['PORTWAY_PORT']}" in lines[0]
        commands = [ln.split("#")[0].strip() for ln in lines if ln.strip().startswith("curl ")]
        assert len(commands) >= 6
        codes: dict[str, str] = {}
        for cmd in commands:
            argv = [*shlex.split(cmd), "-sS", "-w", "\n%{http_code}", "--max-time", "5"]
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            assert r.returncode == 0, (cmd, r.stderr)
            codes[cmd] = r.stdout.rsplit("\n", 1)[1]
            assert r.stdout.count("{") >= 1, (cmd, r.stdout)  # every answer has a JSON body
        by_path = {c.split()[-1].strip("'").split("/", 3)[-1]: code for c, code in codes.items()}
        assert by_path["users"] == "200"
        assert by_path["orders/7"] == "200"
        assert by_path["api/products/list"] == "200"
        assert by_path["maintenance"] == "503"
        assert by_path["nowhere"] == "404"
        assert by_path["users?explain"] == "200"
        assert by_path["status"] == "200"
        assert sorted(code for cmd, code in codes.items() if cmd.endswith("/secure")) == [
            "200",
            "401",
        ]
        assert by_path["limited"] == "200" and by_path["cached"] == "200"
        assert by_path["flaky"] in ("200", "503")
        assert by_path["canary"] == "200"
        dash = next(ln for ln in lines if "Dashboard:" in ln)
        assert f"http://127.0.0.1:{env['PORTWAY_ADMIN_PORT']}/dashboard" in dash
    finally:
        proc.send_signal(sig)
        try:
            rc = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    err = proc.stderr.read() if proc.stderr else ""
    assert rc == 0, err
    assert "Traceback" not in err

"""The gRPC interop client cases with a second client implementation: ``@grpc/grpc-js``.

``test_grpc_interop.py`` runs the spec's cases with grpcio (gRPC's C core and its own
HTTP/2). Here the same cases run from ``node_client/interop_client.js`` on ``@grpc/grpc-js``
(pure JavaScript on Node's ``http2`` module: another HTTP/2 stack, other flow-control,
PING and RST_STREAM habits) against the same grpcio ``InteropServer``, directly (the
control) and through a real gateway: h2c and TLS listeners, both HTTP/2 server engines.
One Node process per path runs every case on one channel and prints a JSON line per case.

The Node packages are pinned in ``node_client/package-lock.json``; install them once with
``npm ci`` in ``tests/proxy/grpc/node_client`` (``.ci/run`` does).

    PYTHONPATH=src python -m pytest -q tests/proxy/grpc/test_grpc_interop_node.py
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.proxy.grpc.interop_support import PATHS, SERVER_NAME, InteropServer, target

CLIENT_DIR = Path(__file__).parent / "node_client"
CLIENT = CLIENT_DIR / "interop_client.js"
CASES = [
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
]
RUN_TIMEOUT = 60.0  # the whole Node run of one path, on a loaded 2-core CI machine


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required for the grpc-js interop tests (apt-get install nodejs npm)")
    for pkg in ("@grpc/grpc-js", "@grpc/proto-loader"):
        if not (CLIENT_DIR / "node_modules" / pkg).is_dir():
            pytest.fail(
                f"{pkg} is not installed: run `npm ci --no-audit --no-fund` in {CLIENT_DIR}"
            )
    return node


async def _run_client(node: str, port: int, ca_path: str | None) -> tuple[int, str, str]:
    args = [str(CLIENT), "--port", str(port), "--case", ",".join(CASES)]
    if ca_path is not None:
        args += ["--tls-ca", ca_path, "--server-name", SERVER_NAME]
    proc = await asyncio.create_subprocess_exec(
        node,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        pytest.fail(
            f"the Node client did not finish in {RUN_TIMEOUT} s\n{out.decode()}\n{err.decode()}"
        )
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("path", PATHS)
async def test_interop_cases_grpc_js(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = _node()
    server = InteropServer().start()
    try:
        async with target(path, server, tmp_path, monkeypatch) as (port, ca_path):
            code, out, err = await _run_client(node, port, ca_path)
    finally:
        await asyncio.to_thread(server.stop)
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    by_case = {r["case"]: r for r in results}
    assert list(by_case) == CASES, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    failed = {name: r["error"] for name, r in by_case.items() if not r["ok"]}
    assert not failed, "\n\n".join(f"{name}: {error}" for name, error in failed.items())
    assert code == 0, f"exit {code}\nstderr:\n{err}"

"""``portway run --watch``: a changed file reloads; a bad one keeps the old config serving
and says what is wrong, with the YAML path and line."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.helpers import free_port, http_get, run_upstream


def _config(port: int, up_url: str, paths: list[str]) -> str:
    routes = "\n".join(
        f'  - {{name: r{i}, match: {{paths: ["={p}"]}}, upstream: u}}' for i, p in enumerate(paths)
    )
    return (
        f'listeners: [{{name: public, address: "127.0.0.1:{port}"}}]\n'
        "admin: {enabled: false}\n"
        "server: {shutdown_timeout: 2s}\n"
        f'upstreams: {{u: {{targets: [{{url: "{up_url}"}}]}}}}\n'
        f"routes:\n{routes}\n"
    )


class Stderr:
    """Collects a process's stderr on a thread so the pipe never fills."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.text = ""
        assert proc.stderr is not None
        self._pipe = proc.stderr
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in iter(self._pipe.readline, b""):
            self.text += line.decode(errors="replace")


async def _status(port: int, path: str) -> int:
    try:
        return (await http_get(f"http://127.0.0.1:{port}{path}", timeout=2))[0]
    except OSError:
        return 0


async def _until(pred: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_watch_reloads_good_config_and_keeps_old_on_bad(tmp_path: Path) -> None:
    async with run_upstream() as up:
        port = free_port()
        cfg = tmp_path / "portway.yaml"
        cfg.write_text(_config(port, up.url, ["/old"]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "portway", "run", "-c", str(cfg), "--workers", "1", "--watch"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        err = Stderr(proc)
        try:
            await _until(lambda: _is(port, "/old", 200))
            assert await _status(port, "/new") == 404

            # a valid change: the new route is served, no restart
            cfg.write_text(_config(port, up.url, ["/old", "/new"]))
            await _until(lambda: _is(port, "/new", 200))

            # an invalid change (unknown upstream on line 6, bad key on line 9): nothing changes
            bad = (
                _config(port, up.url, ["/old", "/new"]).replace(
                    "routes:\n", "routes:\n  - {name: x, match: {paths: [/x]}, upstream: nope}\n"
                )
                + "bogus_key: 1\n"
            )
            cfg.write_text(bad)
            await _until(lambda: _has(err, "bogus_key"))
            assert await _status(port, "/old") == 200
            assert await _status(port, "/new") == 200
            assert await _status(port, "/x") == 404
            lines = [ln for ln in err.text.splitlines() if "rejected" in ln and "reload" in ln]
            assert any("routes[0].upstream" in ln and "line 6" in ln for ln in lines), err.text
            assert any("bogus_key" in ln and "line 9" in ln for ln in lines), err.text

            # fixing the file recovers
            cfg.write_text(_config(port, up.url, ["/fixed"]))
            await _until(lambda: _is(port, "/fixed", 200))
            assert await _status(port, "/old") == 404
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        assert rc == 0
        assert "Traceback" not in err.text


async def _is(port: int, path: str, status: int) -> bool:
    return await _status(port, path) == status


async def _has(err: Stderr, text: str) -> bool:
    return text in err.text

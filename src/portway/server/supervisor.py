"""Process model: one worker in-process, or N forked workers under a supervisor.

Workers bind the listener ports with SO_REUSEPORT, so the kernel spreads connections and no
socket is shared. The supervisor forwards SIGHUP (reload), restarts a worker that dies, and
on SIGTERM/SIGINT tells every worker to stop accepting and drain, then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from portway.config.schema import GatewayConfig
from portway.server.residency import drop_startup_pages
from portway.server.worker import Worker, run_worker

log = logging.getLogger("portway.supervisor")


def _run_loop(main: Callable[[], object]) -> None:
    try:
        import uvloop

        uvloop.run(main())  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - uvloop is a hard dependency
        asyncio.run(main())  # type: ignore[arg-type]


def run_single(
    config: GatewayConfig,
    config_path: str | Path | None,
    watch: bool,
    on_ready: Callable[[Worker], None] | None = None,
) -> int:
    _run_loop(lambda: run_worker(config, config_path=config_path, watch=watch, on_ready=on_ready))
    return 0


def run_supervised(
    config: GatewayConfig,
    config_path: str | Path | None,
    watch: bool,
    workers: int,
    on_ready: Callable[[Worker], None] | None = None,
) -> int:
    if workers <= 1:
        return run_single(config, config_path, watch, on_ready)
    # only a supervisor makes scratch directories (shutil alone imports bz2 and lzma)
    import shutil
    import tempfile

    scratch: list[str] = []
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="portway-metrics-")
        scratch.append(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    # config applied through the admin API (worker 0) is shared with siblings through here
    os.environ["PORTWAY_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="portway-run-")
    scratch.append(os.environ["PORTWAY_RUNTIME_DIR"])
    children: dict[int, int] = {}  # pid -> worker id
    stopping = False
    gave_up = False
    pending: list[int] = []  # signals to forward to every worker
    recent_exits: dict[int, list[float]] = {}  # worker id -> times it died

    def spawn(wid: int, restart: bool = False) -> None:
        pid = os.fork()
        if pid == 0:  # child
            # a reload signal before the worker installs its handlers must not kill it
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                _run_loop(
                    lambda: run_worker(
                        config,
                        config_path=config_path,
                        watch=watch and wid == 0,
                        worker_id=wid,
                        workers=workers,
                        on_ready=on_ready if wid == 0 else None,
                        catch_up=restart,
                    )
                )
            except BaseException:
                log.exception("worker %d crashed", wid)
                code = 1
            os._exit(code)
        children[pid] = wid

    def on_term(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            msg = f"portway: draining (shutdown_timeout {config.server.shutdown_timeout:g}s)\n"
            with contextlib.suppress(OSError):
                os.write(2, msg.encode())
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def on_forward(signum: int, _frame: object) -> None:
        pending.append(signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_forward)  # reload
    signal.signal(signal.SIGUSR1, on_forward)  # reopen log files
    signal.signal(signal.SIGUSR2, on_forward)  # a worker shared a runtime change (peers.py)
    # what the supervisor built (modules, the config) is inherited by every worker: frozen,
    # the workers' cyclic GC never writes to those objects' headers, so their pages stay
    # shared between the processes instead of being copied into each
    gc.collect()
    gc.freeze()
    for wid in range(workers):
        spawn(wid)
    log.info("supervisor %d started %d workers", os.getpid(), workers)
    # the workers have their copies; the supervisor only waits and signals from here on
    drop_startup_pages()
    deadline: float | None = None
    runtime = Path(os.environ["PORTWAY_RUNTIME_DIR"])
    announced = False
    while children:
        if not announced and not stopping:
            notes = [runtime / f"ready.{wid}" for wid in range(workers)]
            if all(n.exists() for n in notes):
                announced = True
                urls = notes[0].read_text()
                print(f"portway: ready: {urls} ({workers} workers)", file=sys.stderr, flush=True)
        while pending:
            sig = pending.pop(0)
            for pid in list(children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if stopping and deadline is None:
                deadline = time.monotonic() + config.server.shutdown_timeout + 5
            if deadline is not None and time.monotonic() > deadline:
                for p in list(children):
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.1)
            continue
        wid = children.pop(pid, -1)
        if not stopping and wid >= 0:
            code = os.waitstatus_to_exitcode(status)
            now = time.monotonic()
            exits = [t for t in recent_exits.get(wid, []) if now - t < 30] + [now]
            recent_exits[wid] = exits
            if len(exits) >= 5:
                # crashing at start-up again and again: a restart loop would hide the cause
                log.critical(
                    "worker %d died %d times in 30s (last exit %s); giving up",
                    wid,
                    len(exits),
                    code,
                )
                on_term(signal.SIGTERM, None)
                continue
            delay = min(5.0, 0.2 * 2 ** (len(exits) - 1))
            log.error(
                "worker %d (pid %d) exited with %s; restarting in %.1fs", wid, pid, code, delay
            )
            time.sleep(delay)
            spawn(wid, restart=True)
    sys.stdout.flush()
    for d in scratch:  # directories this supervisor created for its workers
        shutil.rmtree(d, ignore_errors=True)
    return 1 if gave_up else 0

"""One worker: event loop, gateway, listeners, signals, optional file watch and admin API."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portway.config.schema import GatewayConfig
from portway.proxy.handler import ProxyApp
from portway.runtime.gateway import Gateway, ReloadError
from portway.server.health import Health
from portway.server.listener import AcceptServer, make_listener_tls, start_listener
from portway.server.residency import drop_startup_pages

if TYPE_CHECKING:
    from portway.server.tls import ListenerTls

log = logging.getLogger("portway.server")


class Worker:
    """Runs a :class:`Gateway` on its listeners until asked to stop."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        config_path: str | Path | None = None,
        watch: bool = False,
        admin: bool = True,
        worker_id: int = 0,
        workers: int = 1,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.watch = watch
        self.admin_enabled = admin and config.admin.enabled
        self.worker_id = worker_id
        self.workers = workers
        self.gateway: Gateway | None = None
        self.app: ProxyApp | None = None
        self.servers: list[AcceptServer] = []
        self._stop = asyncio.Event()
        self._closers: list[Callable[[], Any]] = []
        self.admin_server: asyncio.Server | None = None
        #: what /readyz reports: loaded once start() finished, draining from shutdown()
        self.health = Health()
        #: TLS state per listener name: certificates are swapped here on every reload
        self.tls: dict[str, ListenerTls] = {}
        #: HTTP/3 endpoints of listeners with ``quic: true`` (server/quic.py)
        self.quic: list[Any] = []

    async def start(self) -> None:
        observers: list[Any] = []
        metrics: Any = None
        try:
            from portway.observability.metrics import get_metrics

            metrics = get_metrics()
            observers.append(metrics)
        except Exception:  # observability is optional at this layer
            metrics = None
        if self.admin_enabled:
            from portway.admin.dashboard.errors import get_recent_errors

            # the dashboard's "recent errors", from every worker: fed by the metrics observer
            # (a compiled Observer; an interpreted observer cannot join the compiled list).
            # Without an admin listener there is no dashboard to read them (the listener is
            # not started by a reload either): nothing is imported, kept or flushed.
            recent = get_recent_errors()
            if metrics is not None:
                metrics.error_sink = recent.record
            await recent.start()
            self._closers.append(recent.aclose)
        gw = Gateway(self.config, config_path=self.config_path, observers=observers)
        if metrics is not None:
            gw.reload_listeners.append(metrics.config_reload)
        gw.reload_listeners.append(self._reload_tls)
        gw.reload_listeners.append(_trim_after_reload)
        await gw.start()
        self.gateway = gw
        if self.config.state.sync_config:
            from portway.runtime.cluster import ConfigSync

            sync = ConfigSync(gw, self.config.state)
            await sync.start()
            gw.cluster = sync
            self._closers.append(sync.aclose)
        runtime_dir = os.environ.get("PORTWAY_RUNTIME_DIR")
        if self.workers > 1 and runtime_dir:
            from portway.runtime.peers import PeerLog

            gw.override_path = Path(runtime_dir) / "config.yaml"
            parent = os.getppid()

            def wake_siblings() -> None:
                # the supervisor forwards it to every worker; gone means we are stopping
                with contextlib.suppress(ProcessLookupError):
                    os.kill(parent, signal.SIGUSR2)

            gw.peers = PeerLog(
                Path(runtime_dir), self.worker_id, self.workers, wake_siblings, self._apply_shared
            )
        if metrics is not None:
            metrics.set_upstreams_source(lambda: gw.graph.upstreams)
            await metrics.start()
            self._closers.append(metrics.aclose)
        if self.watch and self.config_path is not None:
            # the files' baseline is taken before anything is served: a change made once a
            # client could see the listener (a rotation right after start) is a change
            await self._start_watch(gw)
        app = self.app = ProxyApp(
            gw.graph_ref,
            on_open=getattr(metrics, "connection_opened", None),
            on_close=getattr(metrics, "connection_closed", None),
        )
        for lc in self.config.listeners:
            tls = make_listener_tls(lc)
            if tls is not None:
                self.tls[lc.name] = tls
            srv = await start_listener(
                lc, app, lambda: gw.graph.config.server.limits, lambda: gw.graph.trusted, tls=tls
            )
            self.servers.append(srv)
            if lc.quic and tls is not None:
                from portway.server.quic import start_quic

                self.quic.append(
                    await start_quic(
                        lc,
                        tls,
                        app,
                        lambda: gw.graph.config.server.limits,
                        lambda: gw.graph.trusted,
                        srv,
                    )
                )
        if self.admin_enabled and self.worker_id == 0:
            await self._start_admin(gw)
        self.health.loaded = True

    def _reload_tls(self, result: str) -> None:
        """After a successful reload (SIGHUP, --watch, admin API): new handshakes get the
        certificates of the new config, read again from disk (rotation keeps the paths).
        Listener addresses are static; a listener that gained or lost TLS needs a restart."""
        if result != "ok" or self.gateway is None:
            return
        quic = {q.cfg.name: q.cfg for q in self.quic}
        for lc in self.gateway.config.listeners:
            was = quic.get(lc.name)
            now = (lc.quic, lc.quic_port if lc.quic else None)
            if now != ((True, was.quic_port) if was else (False, None)):
                log.warning("listener %s: changing quic or quic_port needs a restart", lc.name)
            tls = self.tls.get(lc.name)
            if tls is None or lc.tls is None:
                if (tls is None) != (lc.tls is None):
                    log.warning("listener %s: turning TLS on or off needs a restart", lc.name)
                continue
            try:
                tls.update(lc.tls)
            except Exception as e:  # a file changed since validation: keep serving the old
                log.error("listener %s keeps its old certificates: %s", lc.name, e)

    async def _start_admin(self, gw: Gateway) -> None:
        try:
            from portway.admin.server import start_admin
        except ImportError:
            log.warning("admin API not available in this build")
            return
        self.admin_server = await start_admin(gw, self.config.admin, worker=self)

    async def _start_watch(self, gw: Gateway) -> None:
        from portway.config.watcher import ConfigWatcher

        async def changed() -> None:
            # applied here first; siblings only follow a config that was accepted
            if not await self.reload():
                await gw.share({"op": "reload"})

        w = ConfigWatcher(self.config_path, changed)  # type: ignore[arg-type]
        await w.start()
        self._closers.append(w.aclose)
        # certificate files too: a rotation that keeps the paths is a change of config
        files = {
            p
            for lc in self.config.listeners
            if lc.tls is not None
            for c in lc.tls.certificates
            for p in (c.cert, c.key)
        }
        for path in sorted(files):
            cw = ConfigWatcher(path, changed)
            await cw.start()
            self._closers.append(cw.aclose)

    async def reload(self) -> list[str]:
        assert self.gateway is not None
        from portway.config.errors import ConfigError

        try:
            await self.gateway.reload_from_file()
        except ReloadError as e:
            if not isinstance(e.__cause__, ConfigError):
                # config errors were logged line by line by the gateway; build errors were not
                for line in e.errors:
                    log.error("reload rejected, old config keeps serving: %s", line)
            return e.errors
        return []

    async def _apply_shared(self, op: dict[str, Any]) -> None:
        """A change made by a sibling worker (see :mod:`portway.runtime.peers`)."""
        if op.get("op") == "reload":
            await self.reload()
        elif self.gateway is not None:
            await self.gateway.apply_shared(op)

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        peers = self.gateway.peers if self.gateway is not None else None
        if peers is not None:
            loop.add_signal_handler(signal.SIGUSR2, lambda: loop.create_task(peers.catch_up()))
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGUSR1, reopen_log_files)

    def stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def shutdown(self) -> None:
        """Stop accepting, let in-flight requests finish (``shutdown_timeout``), close.

        The admin listener stays open until the drain ends, so ``/readyz`` says
        ``draining`` (503) meanwhile."""
        self.health.draining = True
        for s in self.servers:
            s.close()
        # HTTP/2 clients learn the last stream served (GOAWAY) and stop opening new ones;
        # streams in flight finish within the drain below. No HTTP/2 connection was ever
        # served if the module is not loaded: nothing to drain, nothing to import.
        h2 = sys.modules.get("portway.http.h2engine")
        if h2 is not None and self.app is not None:
            h2.drain_connections(self.app)
        for q in self.quic:
            q.begin_drain()  # HTTP/3: GOAWAY, the same way
        gw = self.gateway
        if gw is not None:
            await gw.drain(gw.config.server.shutdown_timeout)
        for q in self.quic:
            await q.aclose(min(5.0, gw.config.server.shutdown_timeout) if gw else 0.0)
        if self.admin_server is not None:
            self.admin_server.close()
        for c in self._closers:
            res = c()
            if asyncio.iscoroutine(res):
                await res
        if gw is not None:
            await gw.aclose()


def reopen_log_files() -> None:
    """``SIGUSR1``: reopen the gateway's log file and every access-log file (logrotate)."""
    try:
        from portway.observability.logging import reopen_logs

        reopen_logs()
    except ImportError:
        pass
    from portway.plugins.access_log.plugin import reopen_all

    reopen_all()


def ports_of(servers: list[AcceptServer]) -> list[int]:
    out = []
    for s in servers:
        for sock in s.sockets:
            out.append(sock.getsockname()[1])
    return out


async def run_worker(
    config: GatewayConfig,
    *,
    config_path: str | Path | None,
    watch: bool,
    worker_id: int = 0,
    workers: int = 1,
    on_ready: Callable[[Worker], None] | None = None,
    catch_up: bool = False,
) -> None:
    """``catch_up``: a restarted worker reloads at once, so that it serves the config its
    siblings reloaded since start-up, not the one the supervisor was started with."""
    if catch_up and config_path is not None:
        from portway.config.loader import ConfigError, load_config

        # before listening, so no request sees the old routes
        with contextlib.suppress(ConfigError, OSError):
            config = load_config(config_path)
    # the full collection of everything imported and loaded so far (tens of ms) happens
    # here, before the listeners accept, not in front of the first requests
    gc.collect()
    gc.freeze()
    w = Worker(config, config_path=config_path, watch=watch, worker_id=worker_id, workers=workers)
    await w.start()
    if catch_up and config_path is not None:
        await w.reload()  # an admin-applied override newer than the file wins, as in siblings
    w.install_signals()
    if w.gateway is not None and w.gateway.peers is not None:
        # drains and purges made before this worker (re)started; then anything signalled
        # while the signal was still ignored
        await w.gateway.peers.catch_up(replay=True)
    settle_after_start()
    if on_ready is not None:
        on_ready(w)
    announce_ready(w)
    await w.wait()
    if workers == 1:
        announce(f"draining (shutdown_timeout {w.config.server.shutdown_timeout:g}s)")
    await w.shutdown()


def settle_after_start() -> None:
    """Once the worker serves: everything built so far lives as long as the process, so keep
    the cyclic GC from re-scanning it (``gc.freeze``: fewer and shorter pauses, and pages
    inherited from the supervisor stay shared), and collect young garbage less often.
    ``run_worker`` already froze what existed before :meth:`Worker.start`, so the collection
    here only walks what the start built (a fraction of a millisecond, not tens).

    Then the resident pages of code that only start-up ran are given back
    (:mod:`portway.server.residency`; ``PORTWAY_KEEP_STARTUP_PAGES=1`` keeps them).

    Not done: ``malloc_trim`` (measured: no RSS returned after start-up)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    drop_startup_pages()


def _trim_after_reload(result: str) -> None:
    """A reload ran the config code again: its pages go back as after start-up."""
    if result == "success":
        drop_startup_pages()


def listener_urls(w: Worker) -> str:
    """``name scheme://host:port`` of each listener as bound (a port 0 shows the real one)."""
    out = []
    for lc, srv in zip(w.config.listeners, w.servers, strict=False):
        scheme = "https" if lc.tls is not None else "http"
        for sock in srv.sockets[:1]:
            host, port = sock.getsockname()[:2]
            host = f"[{host}]" if ":" in host else host
            out.append(f"{lc.name} {scheme}://{host}:{port}")
    return ", ".join(out)


def announce(message: str) -> None:
    """One line for the operator on stderr (besides the JSON log): ``portway: <message>``."""
    print(f"portway: {message}", file=sys.stderr, flush=True)


def announce_ready(w: Worker) -> None:
    """A single worker says it is ready; under a supervisor each worker leaves a note in the
    runtime directory and the supervisor speaks once all are up."""
    runtime_dir = os.environ.get("PORTWAY_RUNTIME_DIR")
    if w.workers > 1 and runtime_dir:
        note = Path(runtime_dir) / f"ready.{w.worker_id}"
        tmp = note.with_name(f".{note.name}.tmp")
        tmp.write_text(listener_urls(w))
        os.replace(tmp, note)
    elif w.workers == 1:
        announce(f"ready: {listener_urls(w)} (1 worker)")

"""What the admin API needs from the running gateway: the :class:`GatewayControl` protocol, and
:class:`RuntimeControl`, its implementation over :class:`portway.runtime.gateway.Gateway`.

Errors returned by ``validate_config_text``/``apply_config_text``/``reload`` are either plain
strings or objects with ``to_dict()`` giving ``{"path", "line", "column", "message"}`` (the
loader's :class:`~portway.config.errors.ConfigIssue`); the admin API reports both as JSON.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from portway.admin.source import dump_source
from portway.config.schema import GatewayConfig, RouteConfig

if TYPE_CHECKING:
    from portway.runtime.gateway import Gateway


class GatewayControl(Protocol):
    """The running gateway as the admin API sees it.

    - ``config()`` is the effective (validated, ``${ENV}``-substituted) config being served;
      ``config_text()`` its source text (YAML), ``config_path`` the file it came from, if any.
    - ``validate_config_text(text)`` checks a candidate without applying it; returns errors.
    - ``apply_config_text(text, write_back=…)`` validates, builds and swaps atomically; on any
      error nothing changes and the errors are returned. With ``write_back`` and a
      ``config_path``, the file is replaced atomically after a successful swap.
    - ``reload()`` re-reads ``config_path`` and applies it.
    - ``status()`` has at least ``workers``, ``config_hash`` and ``last_reload``
      (``{"result": "ok"|"error"|"none", "errors": [...], "at": epoch seconds|None}``).
    - ``upstreams()`` maps names to live :class:`~portway.upstream.upstream.Upstream` objects
      (``snapshot()``, ``targets``); ``route_table()`` lists ``(rank, path form, route)`` in
      matching priority order.
    - ``share(op)`` makes a runtime change already applied in this process (a drain, a cache
      purge) reach the other workers and instances; returns the workers that lag behind.
    """

    config_path: str | None

    def config(self) -> GatewayConfig: ...

    def config_text(self) -> str: ...

    async def validate_config_text(self, text: str) -> Sequence[Any]: ...

    async def apply_config_text(self, text: str, *, write_back: bool) -> Sequence[Any]: ...

    async def reload(self) -> Sequence[Any]: ...

    def status(self) -> dict[str, Any]: ...

    def upstreams(self) -> Mapping[str, Any]: ...

    def route_table(self) -> list[tuple[int, str, RouteConfig]]: ...

    async def share(self, op: dict[str, Any]) -> list[int]: ...


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, never a part."""
    p = Path(path)
    try:
        mode: int | None = p.stat().st_mode & 0o7777
    except OSError:
        mode = None
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, p)
    except BaseException:
        with _suppress_os():
            os.unlink(tmp)
        raise
    dir_fd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(dir_fd)


class _suppress_os:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], OSError)  # type: ignore[arg-type]


def write_back_file(path: str, text: str) -> str:
    """Write an applied config into the file at ``path``, changing only what differs and
    keeping the operator's comments and layout (:mod:`portway.admin.writeback`); returns the
    text written."""
    from portway.admin.writeback import merge_text

    try:
        old = Path(path).read_text(encoding="utf-8")
    except OSError:
        old = ""
    merged = merge_text(old, text) if old.strip() else text
    write_atomically(path, merged)
    return merged


def check_consumers(cfg: GatewayConfig) -> list[Any]:
    """Credential problems the loader leaves to the graph build, found before applying."""
    try:
        from portway.runtime.consumers import build_consumer_directory
    except ImportError:
        return []
    try:
        build_consumer_directory(cfg.consumers)
    except ValueError as e:
        return [{"path": "consumers", "line": None, "column": None, "message": str(e)}]
    return []


class RuntimeControl:
    """:class:`GatewayControl` over a :class:`~portway.runtime.gateway.Gateway`.

    Keeps the source text of the config being served (the file's, or the last text applied
    through the admin API) so consumer edits keep ``${ENV}`` references unresolved.
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        source_text: str | None = None,
        workers: int | None = None,
    ) -> None:
        self.gateway = gateway
        self.config_path = str(gateway.config_path) if gateway.config_path else None
        self._text = source_text
        self._workers = workers

    def config(self) -> GatewayConfig:
        return self.gateway.config

    def config_text(self) -> str:
        if self._text is None:
            if self.config_path is not None:
                from portway.config.loader import read_config_text

                self._text = read_config_text(self.config_path)
            else:
                self._text = dump_source(self.gateway.config.model_dump(mode="json"))
        return self._text

    async def _load(self, text: str) -> tuple[GatewayConfig | None, list[Any]]:
        """Validate ``text`` and build-check it as ``portway validate`` does (credentials,
        certificates, plugin construction), every problem with its path and line."""
        from portway.config.errors import ConfigError
        from portway.config.loader import load_document
        from portway.server.preflight import check_buildable

        try:
            loaded = load_document(text, "<admin>")
        except ConfigError as e:
            return None, list(e.errors)
        return loaded.config, list(await check_buildable(loaded))

    async def validate_config_text(self, text: str) -> list[Any]:
        return (await self._load(text))[1]

    async def apply_config_text(self, text: str, *, write_back: bool) -> list[Any]:
        from portway.runtime.gateway import ReloadError

        cfg, errors = await self._load(text)
        if cfg is None or errors:
            return errors
        try:
            await self.gateway.apply(cfg)
        except ReloadError as e:
            return list(e.errors)
        self._text = text
        if write_back and self.config_path is not None:
            self._text = await asyncio.to_thread(write_back_file, self.config_path, text)
        await self.gateway.publish(text)
        return []

    async def reload(self) -> list[Any]:
        from portway.config.errors import ConfigError
        from portway.config.loader import read_config_text
        from portway.runtime.gateway import ReloadError

        if self.config_path is None:
            return ["no config file to reload from"]
        try:
            text = read_config_text(self.config_path)
        except ConfigError as e:
            return list(e.errors)
        try:
            await self.gateway.reload_from_file()
        except ReloadError as e:
            return list(e.errors)
        self._text = text
        await self.gateway.publish(None)
        return []

    def status(self) -> dict[str, Any]:
        gw = self.gateway
        g = gw.graph_ref()
        cfg = g.config if g is not None else None
        workers = self._workers
        if workers is None:
            workers = (cfg.server.workers if cfg is not None else None) or os.cpu_count() or 1
        return {
            "workers": workers,
            "pid": os.getpid(),
            "started_at": gw.started,
            "uptime": round(time.time() - gw.started, 3),
            "config_hash": g.config_hash if g is not None else None,
            "config_version": g.version if g is not None else 0,
            "config_path": self.config_path,
            "in_flight": g.inflight if g is not None else 0,
            "last_reload": dict(gw.last_reload),
        }

    def upstreams(self) -> Mapping[str, Any]:
        g = self.gateway.graph_ref()
        return dict(g.upstreams) if g is not None else {}

    def route_table(self) -> list[tuple[int, str, RouteConfig]]:
        g = self.gateway.graph_ref()
        return g.router.table() if g is not None else []

    async def share(self, op: dict[str, Any]) -> list[int]:
        return await self.gateway.share(op)

"""Everything ``portway run`` builds, checked before anything is served.

The loader validates the document (schema, references, plugin config models). What it cannot
see is found when the gateway is *built*: a consumer's credentials (a plain-text password,
a 16-byte HS256 secret, a misspelt key), a listener's certificate files, a plugin whose
construction reads a file or checks its settings. ``check_buildable`` builds each of those
pieces on its own, so every failure is reported — with the YAML path and line of the piece —
instead of the first one ending ``run`` with a bare exception. ``portway validate`` and
``portway run`` both call it; anything it built is closed again (no thread or file is left
behind in the supervisor before it forks its workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import ssl
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from portway.config.errors import ConfigError, ConfigIssue, format_path, issues_from_validation
from portway.config.loader import LoadedConfig, load_document, read_config_text
from portway.config.schema import GatewayConfig, PluginBinding

Path = tuple[str | int, ...]
_WHERE = re.compile(r"^consumers\[(\d+)\](?:\.credentials\.(\w+)\[(\d+)\])?: (.*)$", re.S)


class _Issues:
    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.items: list[ConfigIssue] = []

    def add(self, path: Path, message: str) -> None:
        self.items.append(ConfigIssue(format_path(path), self.loaded.line_of(path), message))


def _credential_models() -> dict[str, type[BaseModel]]:
    from portway.plugins._identity.credentials import (
        BasicAuthCredential,
        JwtCredential,
        KeyAuthCredential,
        MtlsCredential,
    )

    return {
        "key_auth": KeyAuthCredential,
        "basic_auth": BasicAuthCredential,
        "jwt": JwtCredential,
        "mtls": MtlsCredential,
    }


def _check_consumers(cfg: GatewayConfig, out: _Issues) -> None:
    if not cfg.consumers:
        return  # the credential parsers import argon2 and bcrypt: not for a config without
    models = _credential_models()
    bad = False
    for i, c in enumerate(cfg.consumers):
        for kind, model in models.items():
            for j, raw in enumerate(getattr(c.credentials, kind)):
                base: Path = ("consumers", i, "credentials", kind, j)

                def emit(loc: Path, message: str, base: Path = base) -> None:
                    out.add((*base, *loc), message)

                try:
                    model.model_validate(raw)
                except ValidationError as e:
                    bad = True
                    issues_from_validation(e, model, raw, emit)
                except ValueError as e:
                    bad = True
                    out.add(base, str(e))
    if bad:
        return
    # each credential is fine on its own: what is left is one claimed twice
    from portway.runtime.consumers import build_consumer_directory

    try:
        build_consumer_directory(cfg.consumers)
    except ValueError as e:
        m = _WHERE.match(str(e))
        if m is None:
            out.add(("consumers",), str(e))
        elif m.group(2) is None:
            out.add(("consumers", int(m.group(1))), m.group(4))
        else:
            path: Path = ("consumers", int(m.group(1)), "credentials", m.group(2), int(m.group(3)))
            out.add(path, m.group(4))


def _check_tls(cfg: GatewayConfig, out: _Issues) -> None:
    """Files and pairs were checked by the loader (``config/certs.py``: readable, key matches,
    not expired, chain links); here the listener's whole SSL context is built, as ``run``
    builds it (ciphers, ALPN, client CA)."""
    from portway.server.listener import make_ssl_context

    for i, lc in enumerate(cfg.listeners):
        t = lc.tls
        if t is None:
            continue
        base: Path = ("listeners", i, "tls")
        missing = False
        files: list[tuple[Path, str]] = []
        for j, c in enumerate(t.certificates):
            files += [((*base, "certificates", j, "cert"), c.cert)]
            files += [((*base, "certificates", j, "key"), c.key)]
        if t.client_ca:
            files.append(((*base, "client_ca"), t.client_ca))
        for where, f in files:
            if not os.access(f, os.R_OK):
                why = "does not exist" if not os.path.exists(f) else "is not readable"
                out.add(where, f"{where[-1]} file {f!r} {why}")
                missing = True
        if missing:
            continue
        try:
            make_ssl_context(lc)
        except (ssl.SSLError, OSError, ValueError) as e:
            out.add(base, f"cannot build the TLS context: {e}")


async def _close(obj: Any) -> None:
    for name in ("aclose", "close"):
        fn: Callable[[], Any] | None = getattr(obj, name, None)
        if callable(fn):
            res = fn()
            if inspect.isawaitable(res):
                await res
            return


async def _check_plugins(cfg: GatewayConfig, out: _Issues) -> None:
    from portway.pipeline.plugin import PluginEnv
    from portway.pipeline.registry import registry
    from portway.runtime.builder import _consumers, plugin_config

    try:
        consumers = _consumers(cfg)
    except ValueError:
        from portway.pipeline.plugin import ConsumerDirectory

        consumers = ConsumerDirectory()  # already reported by _check_consumers
    shared: dict[str, Any] = {}
    built: list[Any] = []
    where: list[tuple[Path, str | None, PluginBinding]] = [
        (("plugins", k), None, b) for k, b in enumerate(cfg.plugins)
    ]
    for i, r in enumerate(cfg.routes):
        where += [(("routes", i, "plugins", k), r.name, b) for k, b in enumerate(r.plugins)]
    try:
        for path, route, b in where:
            if not b.enabled:
                continue
            env = PluginEnv(route=route, consumers=consumers, settings=cfg, _shared=shared)
            try:
                cls = registry.get(b.name)
                built.append(cls(plugin_config(cls, b.config or {}, cfg), env))
            except ValidationError as e:
                msgs = "; ".join(
                    (".".join(map(str, err["loc"])) + ": " if err["loc"] else "") + err["msg"]
                    for err in e.errors()
                )
                out.add((*path, "config"), f"plugin {b.name!r}: {msgs}")
            except Exception as e:
                out.add((*path, "config"), f"plugin {b.name!r} cannot be built: {e}")
    finally:
        # closing what a check built must not hide the findings
        for p in built:
            with contextlib.suppress(Exception):
                await p.aclose()
        for obj in shared.values():
            with contextlib.suppress(Exception):
                await _close(obj)


async def check_buildable(loaded: LoadedConfig) -> list[ConfigIssue]:
    """Problems found by building each part of a valid config (see the module docstring),
    ordered by line."""
    out = _Issues(loaded)
    cfg = loaded.config
    _check_consumers(cfg, out)
    _check_tls(cfg, out)
    await _check_plugins(cfg, out)
    return sorted(out.items, key=lambda x: x.line or 0)


def preflight(path: str) -> GatewayConfig:
    """Load ``path`` and build-check it; raises :class:`ConfigError` with every problem."""
    loaded = load_document(read_config_text(path), path)
    issues = asyncio.run(check_buildable(loaded))
    if issues:
        raise ConfigError(issues, path)
    return loaded.config

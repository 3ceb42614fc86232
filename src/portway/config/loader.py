"""Load ``portway.yaml`` into a :class:`GatewayConfig`, reporting every problem with its line.

The pipeline is: YAML text → plain data plus a path→line map (:mod:`portway.config.document`:
``${ENV}`` substitution, merge keys, duplicate keys, alias bombs) → schema validation →
cross-document checks (references, duplicates, listener addresses, plugin names, plugin configs
and plugin stage order). Problems from all steps are collected and raised together as one
:class:`~portway.config.errors.ConfigError`, ordered by line; nothing here lets a traceback or a
raw pydantic message reach the user.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from portway.config.checks import Report, check_document
from portway.config.document import MAX_TEXT_BYTES, parse_yaml
from portway.config.errors import (
    ConfigError,
    ConfigIssue,
    Path,
    format_path,
    issues_from_validation,
    suggest,
)
from portway.config.schema import GatewayConfig
from portway.digest import sha256
from portway.pipeline.plugin import Stage
from portway.pipeline.registry import Registry, UnknownPluginError
from portway.pipeline.registry import registry as default_registry

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "LoadedConfig",
    "config_hash",
    "load_config",
    "load_config_text",
    "load_document",
    "read_config_text",
]

# -- plugin bindings ---------------------------------------------------------------------------


_STAGES = " < ".join(s.name for s in Stage)


def _add_plugin_paths(
    data: dict[str, Any], source: str, registry: Registry, report: Report
) -> None:
    """``plugin_paths``: directories of plugin files, relative to the config file's."""
    paths = data.get("plugin_paths")
    if not isinstance(paths, list):
        return
    src = FsPath(source)
    base = src.parent if src.is_file() else FsPath.cwd()
    found = []
    for i, p in enumerate(paths):
        if not isinstance(p, str):
            continue  # the schema reports it
        d = FsPath(p).expanduser()
        d = d if d.is_absolute() else base / d
        if not d.is_dir():
            report(("plugin_paths", i), f"plugin directory {str(d)!r} does not exist")
            continue
        found.append(d)
    registry.add_paths(found)


def _check_bindings(
    bindings: Any,
    base: Path,
    registry: Registry,
    report: Report,
    validation: Callable[[ValidationError, type[BaseModel], Any, Path], None],
) -> None:
    if not isinstance(bindings, list):
        return
    first: dict[str, int] = {}
    highest: tuple[Stage, str] | None = None
    for k, binding in enumerate(bindings):
        if not isinstance(binding, dict) or not isinstance(binding.get("name"), str):
            continue
        name: str = binding["name"]
        where = (*base, k)
        if name in first:
            report(
                (*where, "name"),
                f"plugin {name!r} is bound twice in this list "
                f"(first at {format_path((*base, first[name]))})",
            )
            continue
        first[name] = k
        module = binding.get("module")
        try:
            if isinstance(module, str):
                cls = registry.load_module(name, module)
            else:
                cls = registry.get(name)
        except UnknownPluginError as e:
            if isinstance(module, str):
                report((*where, "module"), str(e))
            elif str(e).startswith("unknown plugin"):
                close = suggest(name, registry.names())
                hint = f"; did you mean {close!r}?" if close else ""
                report(
                    (*where, "name"),
                    f"unknown plugin {name!r}{hint}; looked in {registry.where_looked(name)}",
                )
            else:
                report((*where, "name"), str(e))
            continue
        except Exception as e:  # a broken third-party entry point must not crash validation
            report((*where, "name"), f"plugin {name!r} failed to load: {e}")
            continue
        try:
            stage = Stage(cls.stage)
        except ValueError:
            report((*where, "name"), f"plugin {name!r} declares an unknown stage {cls.stage!r}")
            continue
        if highest is not None and stage < highest[0]:
            report(
                (*where, "name"),
                f"plugin {name!r} (stage {stage.name}) must come before {highest[1]!r} "
                f"(stage {highest[0].name}); order plugins by stage: {_STAGES}",
            )
        elif highest is None or stage > highest[0]:
            highest = (stage, name)
        config = binding.get("config", {})
        if config is None:
            config = {}
        if not isinstance(config, dict):
            continue  # the schema already reports "must be a mapping"
        try:
            cls.Config.model_validate(config)
        except ValidationError as e:
            validation(e, cls.Config, config, (*where, "config"))
        except Exception as e:  # a plugin validator bug is reported, never raised
            report((*where, "config"), f"invalid config: {e}")


# -- public API -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where each of its nodes came from.

    ``lines`` maps a path tuple (``("routes", 3, "match")``) to the 1-based line of its key or
    list item in ``source``.
    """

    config: GatewayConfig
    source: str
    lines: Mapping[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        return _nearest_line(self.lines, path)


def _nearest_line(lines: Mapping[Path, int], path: Path) -> int | None:
    while path not in lines:
        if not path:
            return None
        path = path[:-1]
    return lines[path]


def load_document(
    text: str,
    source: str = "<string>",
    *,
    env: Mapping[str, str] | None = None,
    registry: Registry | None = None,
    check_files: bool = True,
) -> LoadedConfig:
    """Parse and validate ``text``; raise :class:`ConfigError` with every problem found.

    ``check_files=False`` skips reading the certificate files the config names (documentation
    examples whose files do not exist here); they are checked by default."""
    doc = parse_yaml(text, source, os.environ if env is None else env)
    data, lines = doc.data, doc.lines

    issues: list[ConfigIssue] = []
    flagged: set[Path] = set()
    for path, line, msg in doc.issues:
        flagged.add(path)
        issues.append(ConfigIssue(format_path(path), line, msg))

    def report(path: Path, message: str) -> None:
        # a value already flagged (e.g. an unset variable) would only produce echoes here
        if not any(path[: len(f)] == f for f in flagged):
            issues.append(ConfigIssue(format_path(path), _nearest_line(lines, path), message))

    def validation(exc: ValidationError, model: type[BaseModel], sub: Any, base: Path) -> None:
        def emit(loc: Path, message: str) -> None:
            # the schema's own duplicate checks have no location; ours below do
            if base or loc or not message.startswith("duplicate "):
                report((*base, *loc), message)

        issues_from_validation(exc, model, sub, emit)

    config: GatewayConfig | None = None
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as e:
        validation(e, GatewayConfig, data, ())
    reg = registry or default_registry
    _add_plugin_paths(data, source, reg, report)
    profiles = check_document(data, report, check_files=check_files)
    _check_bindings(data.get("plugins"), ("plugins",), reg, report, validation)
    for pname in sorted(profiles):
        prof = data["profiles"][pname]
        if isinstance(prof, dict):
            _check_bindings(
                prof.get("plugins"), ("profiles", pname, "plugins"), reg, report, validation
            )
    routes = data.get("routes")
    if isinstance(routes, list):
        for i, route in enumerate(routes):
            if isinstance(route, dict):
                _check_bindings(
                    route.get("plugins"), ("routes", i, "plugins"), reg, report, validation
                )
    if issues or config is None:
        issues.sort(key=lambda x: x.line or 0)
        raise ConfigError(issues or [ConfigIssue("", None, "invalid config")], source)
    return LoadedConfig(config, source, lines)


def load_config_text(
    text: str,
    source: str = "<string>",
    *,
    env: Mapping[str, str] | None = None,
    registry: Registry | None = None,
) -> GatewayConfig:
    """Validate a config given as text (admin API ``PUT /config``, tests)."""
    return load_document(text, source, env=env, registry=registry).config


def read_config_text(path: str | os.PathLike[str]) -> str:
    """The text of a config file; unreadable or non-UTF-8 files raise :class:`ConfigError`."""
    p = FsPath(path)
    try:
        if p.stat().st_size > MAX_TEXT_BYTES:
            raise ConfigError(
                [ConfigIssue("", None, f"the config is larger than {MAX_TEXT_BYTES} bytes")], str(p)
            )
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(
            [ConfigIssue("", None, f"cannot read the config file: {e.strerror or e}")], str(p)
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            [ConfigIssue("", line, "the config is not valid UTF-8")], str(p)
        ) from None


def load_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    registry: Registry | None = None,
) -> GatewayConfig:
    """Load and validate the config file at ``path``."""
    return load_document(read_config_text(path), str(path), env=env, registry=registry).config


def config_hash(cfg: GatewayConfig) -> str:
    """Short fingerprint of a config's meaning (sha256 of canonical JSON, 12 hex digits).

    Formatting, comments, key order and defaults spelled out or left implicit do not change
    it, so ``/status`` can tell whether two processes serve the same config.
    """
    canonical = orjson.dumps(
        cfg.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    )
    return sha256(canonical).hexdigest()[:12]

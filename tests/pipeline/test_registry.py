"""Plugin registry: built-ins, and third-party plugins from the ``portway.plugins`` entry-point
group of an installed distribution (a real ``*.dist-info`` on ``sys.path``)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from portway.pipeline.plugin import Plugin
from portway.pipeline.registry import BUILTINS, Registry, UnknownPluginError
from portway.plugins.headers.plugin import HeadersPlugin

MODULE = """
from portway.pipeline.plugin import Plugin, PluginConfig, Stage


class HelloConfig(PluginConfig):
    greeting: str = "hi"


class HelloPlugin(Plugin[HelloConfig]):
    name = "tp_hello"
    stage = Stage.transform
    Config = HelloConfig


class Impostor(Plugin[PluginConfig]):
    name = "headers"


class Misnamed(Plugin[PluginConfig]):
    name = "something_else"


NOT_A_PLUGIN = 42
"""

ENTRY_POINTS = """
[portway.plugins]
tp_hello = {mod}:HelloPlugin
headers = {mod}:Impostor
tp_misnamed = {mod}:Misnamed
tp_not_plugin = {mod}:NOT_A_PLUGIN
tp_broken = {mod}_missing:Nothing
"""


@pytest.fixture
def dist(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Installs a distribution by putting it on ``sys.path``; yields its module name."""
    mod = f"tp_plugins_{abs(hash(request.node.name)) % 10**8}"
    (tmp_path / f"{mod}.py").write_text(MODULE)
    info = tmp_path / f"{mod}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {mod}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS.format(mod=mod))
    sys.path.insert(0, str(tmp_path))
    try:
        yield mod
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(mod, None)


def test_entry_point_plugin_loads(dist: str) -> None:
    reg = Registry()
    assert "tp_hello" in reg.names()
    cls = reg.get("tp_hello")
    assert issubclass(cls, Plugin) and cls.__module__ == dist and cls.name == "tp_hello"
    assert reg.get("tp_hello") is cls  # resolved once, then cached


def test_builtin_name_cannot_be_overridden(dist: str) -> None:
    reg = Registry()
    assert reg.get("headers") is HeadersPlugin
    assert dist not in sys.modules  # the impostor's module was never even imported
    assert reg.names().count("headers") == 1


def test_bad_entry_points_are_clear_errors(dist: str) -> None:
    reg = Registry()
    with pytest.raises(UnknownPluginError, match="does not resolve to a Plugin class"):
        reg.get("tp_not_plugin")
    with pytest.raises(UnknownPluginError, match="must equal its registered name"):
        reg.get("tp_misnamed")
    with pytest.raises(UnknownPluginError, match="failed to load: ModuleNotFoundError"):
        reg.get("tp_broken")


def test_unknown_name_lists_known_plugins(dist: str) -> None:
    with pytest.raises(UnknownPluginError) as ei:
        Registry().get("no_such_plugin")
    msg = str(ei.value)
    assert "unknown plugin 'no_such_plugin'" in msg
    for name in (*BUILTINS, "tp_hello"):
        assert name in msg


def test_every_builtin_resolves() -> None:
    reg = Registry()
    for name in BUILTINS:
        assert reg.get(name).name == name


def test_config_load_uses_entry_point_plugins(dist: str) -> None:
    text = textwrap.dedent(
        """
        plugins:
          - name: tp_hello
            config: {greeting: hello}
          - name: tp_helo
        """
    )
    reg = Registry()
    with pytest.raises(ConfigError) as ei:
        load_config_text(text, "c.yaml", registry=reg)
    errors = [str(e) for e in ei.value.errors]
    assert len(errors) == 1 and "plugins[1].name" in errors[0] and "tp_helo" in errors[0]
    assert "tp_hello" in errors[0]  # the did-you-mean hint
    cfg = load_config_text(text.replace("  - name: tp_helo\n", ""), "c.yaml", registry=reg)
    assert cfg.plugins[0].config == {"greeting": "hello"}

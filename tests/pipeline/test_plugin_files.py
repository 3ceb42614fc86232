"""Plugins from files: ``plugin_paths`` and a binding's ``module:``, tested with the shipped
testing kit (``portway.testing``) the way the docs show; an unknown name says where Portway
looked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from portway.testing import MockUpstream, TestGateway

EXAMPLES = Path(__file__).parents[2] / "examples" / "plugins"
ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "src"))


def _config(binding: dict[str, Any]) -> dict[str, Any]:
    return {
        "plugin_paths": [str(EXAMPLES)],
        "routes": [
            {
                "name": "api",
                "match": {"hosts": ["*.api.example.com"], "paths": ["/"]},
                "upstream": "up",
                "plugins": [binding],
            }
        ],
    }


@pytest.mark.parametrize(
    "binding",
    [
        {"name": "add_tenant", "config": {"allowed": ["acme", "globex"]}},
        {
            "name": "add_tenant",
            "module": "add_tenant:AddTenantPlugin",
            "config": {"allowed": ["acme", "globex"]},
        },
    ],
    ids=["plugin_paths", "module"],
)
async def test_example_plugin_loads_from_its_file(binding: dict[str, Any]) -> None:
    async with MockUpstream() as up, TestGateway(_config(binding), upstream=up) as gw:
        r = await gw.get("/orders", headers={"host": "acme.api.example.com"})
        assert r.status == 200, r.body
        assert up.requests[-1].headers.get("x-tenant") == "acme"
        assert r.headers.get("x-served-tenant") == "acme"
        r = await gw.get("/orders", headers={"host": "evil.api.example.com"})
        assert r.status == 403 and len(up.requests) == 1


def test_unknown_plugin_says_where_portway_looked() -> None:
    text = (
        f"plugin_paths: [{EXAMPLES}]\n"
        "upstreams: {u: {targets: [{url: 'http://127.0.0.1:9'}]}}\n"
        "routes: [{name: r, upstream: u, plugins: [{name: add_tenent}]}]\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config_text(text)
    msg = str(e.value)
    assert "did you mean 'add_tenant'" in msg
    assert "entry points of group 'portway.plugins'" in msg
    assert str(EXAMPLES / "add_tenent.py") in msg
    bad = text.replace("{name: add_tenent}", "{name: x, module: 'nowhere.mod:X'}")
    with pytest.raises(ConfigError) as e:
        load_config_text(bad)
    assert "routes[0].plugins[0].module" in str(e.value) and "nowhere" in str(e.value)


def test_validate_resolves_plugin_paths_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "plugins").mkdir()
    shutil.copy(EXAMPLES / "add_tenant.py", tmp_path / "plugins" / "add_tenant.py")
    cfg = tmp_path / "portway.yaml"
    cfg.write_text(
        "plugin_paths: [plugins]\n"
        "upstreams: {u: {targets: [{url: 'http://127.0.0.1:9'}]}}\n"
        "routes: [{name: r, upstream: u, plugins: [{name: add_tenant, config: {allowed: [a]}}]}]\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "portway", "validate", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",  # relative to the config file, not to where portway runs
        env=ENV,
    )
    assert r.returncode == 0, r.stderr
    cfg.write_text(cfg.read_text().replace("allowed: [a]", "allowed: a"))
    r = subprocess.run(
        [sys.executable, "-m", "portway", "validate", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",  # relative to the config file, not to where portway runs
        env=ENV,
    )
    assert r.returncode == 2 and "routes[0].plugins[0].config.allowed (line 3)" in r.stderr


async def test_the_testing_example_in_the_docs_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).parents[2]
    text = (root / "docs" / "plugins.md").read_text()
    m = re.search(r"```python\n(from portway\.testing import .*?)```", text, re.S)
    assert m is not None
    namespace: dict[str, Any] = {}
    exec(compile(m.group(1), "docs/plugins.md", "exec"), namespace)
    monkeypatch.chdir(root)  # its plugin_paths is relative to where the config comes from
    await namespace["test_add_tenant"]()

"""Bad ``request_validation`` configs are rejected at load with the YAML path and line."""

from __future__ import annotations

import pytest

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text

HEAD = (
    "upstreams: {u: {targets: [{url: 'http://127.0.0.1:1'}]}}\n"
    "routes:\n"
    "  - name: r\n"
    "    upstream: u\n"
    "    plugins:\n"
    "      - name: request_validation\n"
    "        config:\n"
)


@pytest.mark.parametrize(
    "config, where, line, fragment",
    [
        ("          body_schema: {type: strnig}\n", "config.body_schema", 8, "invalid JSON Schema"),
        (
            "          body_schema: {properties: {a: {minimum: x}}}\n",
            "config.body_schema",
            8,
            "/properties/a/minimum",
        ),
        (
            "          body_schema: {$ref: '#/$defs/missing'}\n",
            "config.body_schema",
            8,
            "does not exist",
        ),
        ("          openapi: /nonexistent/orders.yaml\n", "config.openapi", 8, "cannot read"),
        ("          on_fail: reject\n", "config", 7, "exactly one of"),
        ("          on_fail: drop\n          body_schema: {}\n", "config.on_fail", 8, "reject"),
        ("          max_depth: 0\n          body_schema: {}\n", "config.max_depth", 8, "1"),
    ],
)
def test_bad_config(config: str, where: str, line: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config_text(HEAD + config, "c.yaml")
    [err] = ei.value.errors
    assert f"routes[0].plugins[0].{where}" in str(err), str(err)
    assert err.line == line and fragment in str(err), str(err)


def test_good_config_compiles_once_and_is_reused() -> None:
    from portway.plugins.request_validation import schema

    schema._compile.cache_clear()
    load_config_text(HEAD + "          body_schema: {type: object, required: [zz9]}\n", "c.yaml")
    load_config_text(HEAD + "          body_schema: {required: [zz9], type: object}\n", "c.yaml")
    info = schema._compile.cache_info()
    assert info.misses == 1 and info.hits >= 1  # key order does not matter

"""Whatever the text, the loader answers with a config or a ConfigError, never a crash."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portway.config.errors import ConfigError
from portway.config.loader import load_config_text
from portway.config.schema import GatewayConfig

KEYS = [
    "listeners",
    "server",
    "admin",
    "state",
    "upstreams",
    "routes",
    "plugins",
    "consumers",
    "name",
    "address",
    "targets",
    "url",
    "upstream",
    "match",
    "paths",
    "hosts",
    "methods",
    "headers",
    "config",
    "limits",
    "timeouts",
    "retries",
    "on",
    "tls",
    "<<",
    "weight",
    "trusted_proxies",
    "request_id",
    "headers",
    "enabled",
    "${X}",
    "username",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.sampled_from(["/", "~(", "=/x", "1s", "8MB", "${A:-b}", "$${", "${", "http://h:1", "*.x"]),
    st.text(max_size=12),
)
trees = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), kids, max_size=5),
    ),
    max_leaves=16,
)


def check(text: str) -> None:
    try:
        cfg = load_config_text(text, env={"A": "1"})
    except ConfigError as e:
        assert e.errors
        for issue in e.errors:
            assert issue.message
            assert isinstance(str(issue), str)
    else:
        assert isinstance(cfg, GatewayConfig)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), trees, max_size=6))
def test_random_documents(doc: dict[str, Any]) -> None:
    check(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abc:-[]{}&*!|>'\"#%@`\t\n ,?<$~0123456789", max_size=80))
def test_random_text(text: str) -> None:
    check(text)

"""``upstreams.<n>.protocol`` at config load: values, and the routes that cannot use an
HTTP/2 upstream (traffic rules) or need one (gRPC plugins), reported with their line."""

from __future__ import annotations

import pytest

from portway.config.loader import ConfigError, load_config_text

BASE = """\
upstreams:
  g: {protocol: h2c, targets: [{url: http://127.0.0.1:50051}]}
  h: {targets: [{url: http://127.0.0.1:9001}]}
routes:
"""


def test_protocol_values() -> None:
    cfg = load_config_text(BASE + "  - {name: r, match: {paths: [/]}, upstream: g}\n")
    assert cfg.upstreams["g"].protocol == "h2c"
    assert cfg.upstreams["h"].protocol == "http1"
    with pytest.raises(ConfigError) as ei:
        load_config_text(BASE.replace("h2c", "http3") + "  - {name: r, upstream: g}\n")
    assert "protocol" in str(ei.value) and "line 2" in str(ei.value)


def test_grpc_plugin_needs_an_http2_upstream() -> None:
    text = BASE + "  - name: w\n    upstream: h\n    plugins: [{name: grpc_web}]\n"
    with pytest.raises(ConfigError) as ei:
        load_config_text(text)
    msg = str(ei.value)
    assert "grpc_web needs an upstream with protocol h2c" in msg
    assert "line 6" in msg


def test_traffic_rules_refuse_http2_upstreams() -> None:
    text = BASE + ("  - name: s\n    upstream: h\n    mirror: {upstream: g, sample: 0.5}\n")
    with pytest.raises(ConfigError) as ei:
        load_config_text(text)
    msg = str(ei.value)
    assert "support protocol http1 upstreams only" in msg
    assert "line 7" in msg

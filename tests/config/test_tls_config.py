"""TLS config: unusable certificates are config errors with the YAML path and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from portway.config.loader import ConfigError, load_config, load_config_text
from tests.server.tls_kit import Pki


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config_text(text)
    return [str(i) for i in e.value.errors]


def _listener(certs: str) -> str:
    return f"""\
listeners:
  - name: public-tls
    address: 127.0.0.1:8443
    tls:
      certificates:
{certs}
routes: []
"""


def test_expired_mismatched_and_incomplete_chain_with_lines(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    good, good_key = pki.leaf("a.example.com")
    old, old_key = pki.leaf("old.example.com", days=(-30, -1))
    _, other_key = pki.leaf("other.example.com")
    # an intermediate CA that is *not* in the file: leaf + the root only leaves a gap
    inter = Pki(tmp_path, "Intermediate CA")
    gap, gap_key = pki.leaf("gap.example.com", issuer=(inter.ca, inter.ca_key))
    Path(gap).write_bytes(Path(gap).read_bytes() + Path(pki.ca_path).read_bytes())
    errs = _errors(
        _listener(
            f"""\
        - {{cert: {good}, key: {good_key}}}
        - {{cert: {old}, key: {old_key}}}
        - {{cert: {good}, key: {other_key}}}
        - {{cert: {gap}, key: {gap_key}}}
        - {{cert: {tmp_path}/missing.pem, key: {good_key}}}"""
        )
    )
    assert len(errs) == 4, errs
    assert errs[0].startswith("listeners[0].tls.certificates[1] (line 7)") and "expired" in errs[0]
    assert errs[1].startswith("listeners[0].tls.certificates[2] (line 8)")
    assert "key does not match" in errs[1]
    assert errs[2].startswith("listeners[0].tls.certificates[3] (line 9)")
    assert "incomplete chain" in errs[2]
    assert errs[3].startswith("listeners[0].tls.certificates[4] (line 10)")
    assert "cannot read" in errs[3]


def test_legacy_form_maps_onto_certificates(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.leaf("a.example.com")
    cfg = load_config_text(
        f"listeners:\n  - tls: {{cert: {cert}, key: {key}, min_version: '1.3'}}\n"
    )
    tls = cfg.listeners[0].tls
    assert tls is not None and tls.certificates[0].cert == cert and tls.min_version == "1.3"
    old, old_key = pki.leaf("old.example.com", days=(-30, -1))
    errs = _errors(f"listeners:\n  - tls: {{cert: {old}, key: {old_key}}}\n")
    assert errs[0].startswith("listeners[0].tls.cert (line 2)") and "expired" in errs[0]


def test_upstream_tls_keys(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key = pki.leaf("gw.internal", client=True)
    text = f"""\
upstreams:
  payments:
    targets: [{{url: https://payments.internal:8443}}]
    tls: {{verify: true, ca: {pki.ca_path}, server_name: payments.internal,
          client_cert: {cert}, client_key: {key}, min_version: "1.2"}}
"""
    up = load_config_text(text).upstreams["payments"]
    assert up.tls is not None and up.tls.server_name == "payments.internal"
    errs = _errors(text.replace("https://", "http://"))
    assert "tls applies to https:// targets" in errs[0]
    _, other_key = pki.leaf("x.internal", client=True)
    errs = _errors(text.replace(f"client_key: {key}", f"client_key: {other_key}"))
    assert errs[0].startswith("upstreams.payments.tls.client_cert (line 5)"), errs
    errs = _errors(text.replace(f"client_key: {key}, ", ""))
    assert "client_cert and client_key go together" in errs[0]


def test_portway_validate_reports_the_line(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    old, old_key = pki.leaf("old.example.com", days=(-30, -1))
    path = tmp_path / "portway.yaml"
    path.write_text(_listener(f"        - {{cert: {old}, key: {old_key}}}"))
    r = subprocess.run(
        [sys.executable, "-m", "portway", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "listeners[0].tls.certificates[0] (line 6)" in r.stderr and "expired" in r.stderr
    with pytest.raises(ConfigError):
        load_config(path)

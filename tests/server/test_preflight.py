"""``portway validate`` builds what ``portway run`` builds and reports every failure with its
YAML path and line; ``run`` refuses the same config with the same list, never a bare
exception."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import free_port

BAD = """\
listeners:
  - {{name: public, address: "127.0.0.1:{p1}"}}
  - name: secure
    address: "127.0.0.1:{p2}"
admin: {{enabled: false}}
upstreams: {{u: {{targets: [{{url: "http://127.0.0.1:9"}}]}}}}
routes:
  - name: r
    match: {{paths: [/]}}
    upstream: u
    plugins:
      - {{name: access_log, config: {{path: {d}/no/such/dir/access.log}}}}
consumers:
  - username: a
    credentials:
      basic_auth: [{{password: plain-text}}]
  - username: b
    credentials:
      jwt: [{{issuer: b, secret: "0123456789abcdef"}}]
  - username: c
    credentials:
      key_auth: [{{kee: x}}]
"""

EXPECTED = [
    ("routes[0].plugins[0].config (line 12)", "access_log"),
    ("consumers[0].credentials.basic_auth[0].password (line 16)", "unknown key 'password'"),
    ("consumers[1].credentials.jwt[0] (line 19)", "at least 32 bytes"),
    ("consumers[2].credentials.key_auth[0].kee (line 22)", "did you mean 'key'"),
]

#: certificate files are read by the loader itself (``config/certs.py``), a first pass
#: before the build checks above: every certificate problem at once, with its line
BAD_TLS = """\
listeners:
  - name: secure
    address: "127.0.0.1:{p1}"
    tls:
      certificates:
        - {{cert: {d}/missing-cert.pem, key: {d}/missing-key.pem}}
        - {{cert: {d}/other-cert.pem, key: {d}/other-key.pem}}
admin: {{enabled: false}}
"""


def _portway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portway", *args], capture_output=True, text=True, timeout=60
    )


def test_validate_and_run_report_every_build_error_with_its_line(tmp_path: Path) -> None:
    cfg = tmp_path / "portway.yaml"
    cfg.write_text(BAD.format(p1=free_port(), p2=free_port(), d=tmp_path))
    for args in (("validate", str(cfg)), ("run", "-c", str(cfg), "-w", "1")):
        r = _portway(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and "ValueError" not in r.stderr
        lines = r.stderr.splitlines()
        for where, what in EXPECTED:
            assert any(where in ln and what in ln for ln in lines), (where, r.stderr)
    assert not (tmp_path / "no").exists()


def test_certificate_files_are_reported_with_their_lines(tmp_path: Path) -> None:
    cfg = tmp_path / "portway.yaml"
    cfg.write_text(BAD_TLS.format(p1=free_port(), d=tmp_path))
    for args in (("validate", str(cfg)), ("run", "-c", str(cfg), "-w", "1")):
        r = _portway(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr
        for line, name in ((6, "missing-cert.pem"), (7, "other-cert.pem")):
            assert any(f"(line {line})" in ln and name in ln for ln in r.stderr.splitlines()), (
                line,
                r.stderr,
            )


def test_validate_still_says_ok_for_a_buildable_config(tmp_path: Path) -> None:
    cfg = tmp_path / "portway.yaml"
    cfg.write_text(
        "upstreams: {u: {targets: [{url: 'http://127.0.0.1:9'}]}}\n"
        "routes: [{name: r, match: {paths: [/]}, upstream: u,"
        f" plugins: [{{name: access_log, config: {{path: {tmp_path}/access.log}}}}]}}]\n"
        "consumers: [{username: a, credentials: {key_auth: [{key: k-0123456789}]}}]\n"
    )
    r = _portway("validate", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout

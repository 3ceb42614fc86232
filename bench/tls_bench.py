#!/usr/bin/env python3
"""TLS benchmark: Portway (1 worker) vs nginx (1 worker) with the same certificate.

Needs nginx, wrk, h2load and openssl (``apt-get install nginx wrk nghttp2-client openssl``).
Both proxies terminate TLS (TLS 1.3, P-256 certificate, ALPN h2 + http/1.1) in front of the same
nginx upstream answering 200 with a 1 KiB body. Interleaved rounds; medians and the ratio to
nginx measured in the same round:

* ``handshakes/s``: ``openssl s_time -new`` (a full handshake and one request per connection);
* ``keep-alive req/s``: ``wrk`` over HTTPS/1.1 (``-c 64``);
* ``h2 req/s``: ``h2load -c 16 -m 8`` over TLS with ALPN h2.

    python bench/tls_bench.py [--rounds 3] [--duration 5] [--h2-requests 60000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from variants import free_port, nginx, wait_port

PROXY_CONF = """
worker_processes 1;
daemon off;
pid {dir}/proxy.pid;
error_log {dir}/proxy.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream up {{ server 127.0.0.1:{up}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} ssl http2 reuseport backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:S:10m;
    keepalive_requests 1000000;  # (the default 1000 would GOAWAY h2load's connections)
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""


def make_cert(d: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("bench.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    c, k = d / "cert.pem", d / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(c), str(k)


def handshakes(port: int, seconds: int) -> float:
    out = subprocess.run(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(seconds)],
        capture_output=True,
        text=True,
    ).stdout
    m = re.search(r"(\d+) connections in ([\d.]+) real seconds", out)
    return int(m.group(1)) / float(m.group(2)) if m else float("nan")


def keepalive(port: int, seconds: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{seconds}s", f"https://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else float("nan")


def h2(port: int, n: int) -> float:
    out = subprocess.run(
        ["h2load", "-n", str(n), "-c", "16", "-m", "8", f"https://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
    ).stdout
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    ok = re.search(r"(\d+) succeeded", out)
    if not m or not ok or int(ok.group(1)) < n * 0.99:
        return float("nan")
    return float(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--h2-requests", type=int, default=60000)
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "h2load", "openssl"):
        if shutil.which(tool) is None:
            print(f"tls_bench: {tool} not found", file=sys.stderr)
            return 2
    d = Path(tempfile.mkdtemp(prefix="portway-tls-bench-"))
    cert, key = make_cert(d)
    up, ngx, pw = free_port(), free_port(), free_port()
    body = "x" * 1024
    procs = [nginx(str(d), "upstream", up, f'location / {{ return 200 "{body}"; }}')]
    conf = d / "proxy.conf"
    conf.write_text(
        PROXY_CONF.format(dir=d, port=ngx, up=up, cert=cert, key=key)  # nginx 1.22 syntax
    )
    procs.append(
        subprocess.Popen(["nginx", "-c", str(conf), "-p", str(d)], stderr=subprocess.DEVNULL)
    )
    wait_port(ngx)
    cfg = d / "portway.yaml"
    cfg.write_text(
        f"listeners: [{{name: public, address: '127.0.0.1:{pw}',"
        f" tls: {{certificates: [{{cert: {cert}, key: {key}}}]}}}}]\n"
        "admin: {enabled: false}\n"
        f"upstreams: {{u: {{targets: [{{url: 'http://127.0.0.1:{up}'}}]}}}}\n"
        "routes: [{name: r, match: {paths: ['/']}, upstream: u}]\n"
    )
    pwp = subprocess.Popen(
        [sys.executable, "-m", "portway", "run", "-c", str(cfg), "--workers", "1"],
        stderr=subprocess.DEVNULL,
    )
    procs.append(pwp)
    wait_port(pw)
    targets = {"nginx": ngx, "portway": pw}
    tests = {
        "handshakes/s": lambda p: handshakes(p, args.duration),
        "keep-alive req/s": lambda p: keepalive(p, args.duration),
        "h2 req/s": lambda p: h2(p, args.h2_requests),
    }
    res: dict[tuple[str, str], list[float]] = {}
    try:
        for rnd in range(args.rounds):
            order = ["nginx", "portway"] if rnd % 2 == 0 else ["portway", "nginx"]
            for test, fn in tests.items():
                for name in order:
                    v = fn(targets[name])
                    res.setdefault((test, name), []).append(v)
                    print(f"round {rnd + 1} {test} {name}: {v:.0f}", file=sys.stderr)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(10)
    print(f"\nmedians of {args.rounds} interleaved rounds (1 worker each, 1 KiB body)\n")
    print("| test | nginx | portway | ratio |")
    print("|---|---|---|---|")
    for test in tests:
        n = statistics.median(res[(test, "nginx")])
        p = statistics.median(res[(test, "portway")])
        print(f"| {test} | {n:.0f} | {p:.0f} | {p / n:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

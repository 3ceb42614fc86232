"""Scenario set-ups for ``bench/run.py``: what each variant starts and compares.

A variant starts its proxies (Portway with a policy, nginx/HAProxy doing the same, a Redis)
on top of the shared nginx upstream and returns :class:`Target` entries plus the pairs whose
per-round ratios are the numbers to quote. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: every process started here, so a failed set-up still stops what it started
STARTED: list[subprocess.Popen[bytes]] = []

API_KEY = "bench-key-0123456789abcdef"
HS_SECRET = "bench-hs256-secret-0123456789abcdef0123456789"
#: a limit no benchmark reaches: the decision is made and reported, nothing is rejected
HIGH_RATE = "{rate: 1000000000, per: 1s}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


@dataclass
class Target:
    """One thing wrk loads: one or more ports (one wrk per port, connections split), the
    processes whose CPU and memory are counted, and the request's headers and path."""

    name: str
    ports: list[int]
    pids: list[int]
    headers: list[str] = field(default_factory=list)
    path: str = "/"


@dataclass
class Setup:
    targets: list[Target]
    #: (numerator, denominator) target names: the median of per-round ratios is printed
    ratios: list[tuple[str, str]]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}.err warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  upstream up {{ server 127.0.0.1:{up}; keepalive 256; }}
  {http}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    {body}
  }}
}}
"""

PROXY = 'proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";'


def nginx(
    d: str, name: str, port: int, body: str, up: int = 0, http: str = "", workers: int = 1
) -> subprocess.Popen[bytes]:
    conf = Path(d) / f"{name}.conf"
    conf.write_text(
        NGINX_CONF.format(
            dir=d, name=name, port=port, body=body, up=up or port, http=http, workers=workers
        )
    )
    p = subprocess.Popen(["nginx", "-c", str(conf), "-p", d], stderr=subprocess.DEVNULL)
    STARTED.append(p)
    wait_port(port)
    return p


def upstream_body(d: str) -> str:
    body = "x" * 1024
    return (
        f'location / {{ return 200 "{body}"; }}\n'
        # cacheable for the --cache variant
        f'    location /c/ {{ add_header Cache-Control "max-age=3600"; return 200 "{body}"; }}\n'
        f"    location = /jwks.json {{ default_type application/json; alias {d}/jwks.json; }}"
    )


def portway(
    d: str, name: str, yaml_text: str, workers: int = 1
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cfg = Path(d) / f"{name}.yaml"
    cfg.write_text(
        f"listeners: [{{name: public, address: '127.0.0.1:{port}'}}]\n"
        "admin: {enabled: false}\n" + yaml_text
    )
    p = subprocess.Popen(
        [sys.executable, "-m", "portway", "run", "-c", str(cfg), "--workers", str(workers)],
        stderr=open(Path(d) / f"{name}.err", "wb"),  # noqa: SIM115 (lives with the process)
    )
    STARTED.append(p)
    wait_port(port)
    return p, port


def upstream_yaml(up: int) -> str:
    return f"upstreams: {{u: {{targets: [{{url: 'http://127.0.0.1:{up}'}}]}}}}\n"


def route(plugins: str = "") -> str:
    extra = f", plugins: [{plugins}]" if plugins else ""
    return f"routes: [{{name: r, match: {{paths: ['/']}}, upstream: u{extra}}}]\n"


KEY_CONSUMER = (
    f"consumers: [{{username: alice, credentials: {{key_auth: [{{key: {API_KEY}}}]}}}}]\n"
)
POLICY = (
    "{name: key_auth, config: {headers: [apikey], query_params: []}}, "
    f"{{name: rate_limit, config: {{key: [consumer], limits: [{HIGH_RATE}]}}}}"
)

NGINX_POLICY_HTTP = (
    f'map $http_apikey $consumer {{ default ""; "{API_KEY}" alice; }}\n'
    "  limit_req_zone $consumer zone=rl:10m rate=100000000r/s;"
)
NGINX_POLICY = (
    'if ($consumer = "") { return 401; } limit_req zone=rl burst=1000000 nodelay; '
    'proxy_set_header apikey ""; ' + PROXY
)
NGINX_JSON_LOG = (
    'log_format jsonl escape=json \'{"time":"$time_iso8601","request_id":"$request_id",'
    '"client_ip":"$remote_addr","method":"$request_method","path":"$uri",'
    '"status":$status,"bytes_in":$request_length,"bytes_out":$bytes_sent,'
    '"latency_ms":$request_time,"upstream_latency_ms":"$upstream_response_time",'
    '"user_agent":"$http_user_agent","consumer":"$consumer"}\';'
)


def haproxy(d: str, name: str, port: int, up: int, policy: bool) -> subprocess.Popen[bytes] | None:
    if shutil.which("haproxy") is None:
        return None
    rules = ""
    if policy:
        rules = (
            f"  http-request deny deny_status 401 unless {{ req.hdr(apikey) -m str {API_KEY} }}\n"
            "  http-request track-sc0 req.hdr(apikey) table rl\n"
            "  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 1000000000 }\n"
            "  http-request del-header apikey\n"
        )
    conf = Path(d) / f"{name}.cfg"
    conf.write_text(
        "global\n  nbthread 1\n  maxconn 8000\n"
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n"
        "  timeout server 30s\n  option http-keep-alive\n"
        "backend rl\n  stick-table type string len 64 size 100k expire 10s store http_req_rate(1s)\n"
        f"frontend f\n  bind 127.0.0.1:{port}\n{rules}  default_backend b\n"
        f"backend b\n  http-reuse always\n  server s1 127.0.0.1:{up}\n"
    )
    p = subprocess.Popen(["haproxy", "-f", str(conf)], stderr=subprocess.DEVNULL)
    STARTED.append(p)
    wait_port(port)
    return p


def _pw_target(
    d: str, s: Setup, name: str, yaml_text: str, workers: int = 1, **kw: object
) -> Target:
    p, port = portway(d, name, yaml_text, workers)
    s.procs.append(p)
    t = Target(name, [port], [p.pid], **kw)  # type: ignore[arg-type]
    s.targets.append(t)
    return t


def _ngx_target(
    d: str, s: Setup, name: str, up: int, body: str, http: str = "", **kw: object
) -> Target:
    port = free_port()
    workers = int(kw.pop("workers", 1))  # type: ignore[call-overload]
    p = nginx(d, name, port, body, up=up, http=http, workers=workers)
    s.procs.append(p)
    t = Target(name, [port], [p.pid], **kw)  # type: ignore[arg-type]
    s.targets.append(t)
    return t


def setup_default(d: str, up: int, floor: bool) -> Setup:
    s = Setup([], [("portway", "nginx")])
    _ngx_target(d, s, "nginx", up, f"location / {{ {PROXY} }}")
    _pw_target(d, s, "portway", upstream_yaml(up) + route())
    if floor:
        port = free_port()
        p = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("proto_proxy.py")),
                str(port),
                str(up),
                "--batch",
            ],
            stderr=subprocess.DEVNULL,
        )
        s.procs.append(p)
        STARTED.append(p)
        wait_port(port)
        s.targets.append(Target("floor", [port], [p.pid]))
        s.ratios.append(("floor", "nginx"))
    return s


def setup_policy(d: str, up: int, full: bool) -> Setup:
    hdr = [f"apikey: {API_KEY}"]
    s = Setup([], [])
    tag = "full" if full else "policy"
    http = NGINX_POLICY_HTTP
    body = NGINX_POLICY
    plugins = POLICY
    if full:
        http += "\n  " + NGINX_JSON_LOG + f"\n  access_log {d}/nginx-access.log jsonl;"
        body = (
            "proxy_set_header X-Request-ID $request_id; add_header X-Request-ID $request_id; "
            + body
        )
        plugins = (
            "{name: request_id}, "
            + f"{{name: access_log, config: {{path: '{d}/portway-access.log'}}}}, "
            + plugins
        )
    _ngx_target(d, s, f"nginx-{tag}", up, f"location / {{ {body} }}", http, headers=hdr)
    _pw_target(
        d, s, f"portway-{tag}", upstream_yaml(up) + KEY_CONSUMER + route(plugins), headers=hdr
    )
    _pw_target(d, s, "portway-pass", upstream_yaml(up) + route())
    s.ratios = [(f"portway-{tag}", f"nginx-{tag}"), (f"portway-{tag}", "portway-pass")]
    if not full:
        port = free_port()
        p = haproxy(d, "haproxy-policy", port, up, policy=True)
        if p is not None:
            s.procs.append(p)
            s.targets.append(Target("haproxy-policy", [port], [p.pid], headers=hdr))
            s.ratios.append(("portway-policy", "haproxy-policy"))
    return s


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def setup_jwt(d: str, up: int) -> Setup:
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    exp = int(time.time()) + 86400
    hs = pyjwt.encode({"iss": "bench-hs", "sub": "alice", "exp": exp}, HS_SECRET, "HS256")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    jwk = {
        "kty": "RSA",
        "kid": "k1",
        "alg": "RS256",
        "use": "sig",
        "n": _b64(pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")),
        "e": _b64(pub.e.to_bytes(3, "big")),
    }
    (Path(d) / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    rs = pyjwt.encode(
        {"iss": "bench-rs", "sub": "bob", "exp": exp}, key, "RS256", headers={"kid": "k1"}
    )
    consumers = (
        "consumers: [{username: alice, credentials: {jwt: [{issuer: bench-hs, "
        f"secret: '{HS_SECRET}'}}]}}}}]\n"
    )
    rl = f"{{name: rate_limit, config: {{key: [consumer], limits: [{HIGH_RATE}]}}}}"
    s = Setup([], [])
    _pw_target(d, s, "portway-pass", upstream_yaml(up) + route())
    _pw_target(
        d,
        s,
        "portway-jwt-hs256",
        upstream_yaml(up) + consumers + route("{name: jwt}, " + rl),
        headers=[f"Authorization: Bearer {hs}"],
    )
    _pw_target(
        d,
        s,
        "portway-jwt-rs256-jwks",
        upstream_yaml(up)
        + route(
            "{name: jwt, config: {consumer_credentials: false, issuers: [{issuer: bench-rs, "
            f"jwks_url: 'http://127.0.0.1:{up}/jwks.json'}}]}}}}, " + rl
        ),
        headers=[f"Authorization: Bearer {rs}"],
    )
    _ngx_target(d, s, "nginx", up, f"location / {{ {PROXY} }}")
    s.ratios = [
        ("portway-jwt-hs256", "portway-pass"),
        ("portway-jwt-rs256-jwks", "portway-pass"),
        ("portway-jwt-hs256", "nginx"),
    ]
    return s


def redis_server(d: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    p = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            d,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    STARTED.append(p)
    wait_port(port)
    return p, port


def setup_redis_rl(d: str, up: int, instances: int = 3) -> Setup:
    s = Setup([], [("portway-redis-x3", "portway-local-x3")])
    rp, rport = redis_server(d)
    s.procs.append(rp)
    for store in ("local", "redis"):
        ports, pids = [], []
        for i in range(instances):
            extra = (
                f", store: redis, redis: {{url: 'redis://127.0.0.1:{rport}/0'}}"
                if store == "redis"
                else f", instances: {instances}"
            )
            plugins = f"{{name: rate_limit, config: {{key: [ip], limits: [{HIGH_RATE}]{extra}}}}}"
            p, port = portway(d, f"pw-{store}-{i}", upstream_yaml(up) + route(plugins))
            s.procs.append(p)
            ports.append(port)
            pids.append(p.pid)
        name = f"portway-{store}-x{instances}"
        s.targets.append(Target(name, ports, pids))
    s.targets.append(Target("redis-server", [], [rp.pid]))
    return s


def setup_cache(d: str, up: int) -> Setup:
    s = Setup([], [("portway-cache", "portway-pass"), ("portway-cache", "nginx-cache")])
    _pw_target(d, s, "portway-pass", upstream_yaml(up) + route(), path="/c/x")
    _pw_target(d, s, "portway-cache", upstream_yaml(up) + route("{name: cache}"), path="/c/x")
    # nginx's workers run as nobody: the cache directory must be theirs to write
    os.makedirs(f"{d}/ngx-cache", exist_ok=True)
    os.chmod(d, 0o755)
    os.chmod(f"{d}/ngx-cache", 0o777)
    _ngx_target(
        d,
        s,
        "nginx-cache",
        up,
        f"location / {{ proxy_cache c; proxy_cache_valid 200 1h; {PROXY} }}",
        f"proxy_cache_path {d}/ngx-cache keys_zone=c:10m;",
        path="/c/x",
    )
    return s


def setup_workers(d: str, up: int, workers: int) -> Setup:
    s = Setup([], [(f"portway-w{workers}", f"nginx-w{workers}")])
    _ngx_target(d, s, f"nginx-w{workers}", up, f"location / {{ {PROXY} }}", workers=workers)
    _pw_target(d, s, f"portway-w{workers}", upstream_yaml(up) + route(), workers=workers)
    return s

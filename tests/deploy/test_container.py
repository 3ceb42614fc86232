"""The Dockerfile and docker-compose.yaml fit the gateway: no Docker daemon runs here, so
these check what can be checked without building: stages, user, healthcheck path and port,
the files the build copies, and that the bundled configs load and reach the compose
services."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from portway.admin.probes import PATHS
from portway.config.loader import load_config_text

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
IMAGE_CONFIG = (ROOT / "deploy" / "docker" / "portway.yaml").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_multi_stage_non_root_with_healthcheck_on_the_admin_listener() -> None:
    ins = _instructions()
    froms = [rest for w, rest in ins if w == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS build") and froms[1].endswith("AS runtime")
    runtime = ins[[i for i, (w, _) in enumerate(ins) if w == "FROM"][1] :]
    user = [rest for w, rest in runtime if w == "USER"]
    assert user == ["10001:10001"]
    health = next(rest for w, rest in runtime if w == "HEALTHCHECK")
    m = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", health)
    assert m is not None and m.group(2) in PATHS
    cfg = load_config_text(IMAGE_CONFIG, "image", env={"PORTWAY_ADMIN_TOKEN": "t"})
    assert cfg.admin.address.endswith(":" + m.group(1))
    # the runtime stage refuses a pure-Python (uncompiled) build
    assert any("mypyc build failed" in rest for w, rest in runtime if w == "RUN")


def test_files_the_build_copies_exist() -> None:
    for w, rest in _instructions():
        if w == "COPY" and "--from=" not in rest:
            *sources, _dest = rest.split()
            for s in sources:
                assert (ROOT / s).exists(), s


def test_compose_runs_the_image_config_against_its_services() -> None:
    services = COMPOSE["services"]
    assert {"gateway", "redis", "users", "orders"} <= set(services)
    gw = services["gateway"]
    assert gw["read_only"] is True and "/tmp" in gw["tmpfs"]
    env = {k: str(v) for k, v in gw["environment"].items()}
    # every variable the image config needs without a default is set by compose
    needed = {m for m in re.findall(r"\$\{(\w+)\}", IMAGE_CONFIG)}
    assert needed <= set(env), needed - set(env)
    cfg = load_config_text(IMAGE_CONFIG, "compose", env=env)
    assert cfg.server.workers == 2
    hosts = {urlsplit(t.url).hostname for u in cfg.upstreams.values() for t in u.targets}
    assert hosts <= set(services)
    assert urlsplit(cfg.state.redis_url).hostname == "redis"
    assert "8080:8080" in gw["ports"] and "9901:9901" in gw["ports"]

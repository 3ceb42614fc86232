"""The Helm chart renders to valid Kubernetes objects that fit together (see chart.py for
how it is rendered without helm)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import kubernetes_validate
import pytest
import yaml

from portway.admin.probes import PATHS
from portway.config.loader import load_config_text
from tests.deploy.chart import CHART, load_values, render, render_file

K8S = kubernetes_validate.latest_version()


def _objects(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for docs in rendered.values() for o in docs}


def test_every_object_passes_the_kubernetes_schemas() -> None:
    objs = _objects(render())
    assert set(objs) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    for obj in objs.values():
        kubernetes_validate.validate(obj, K8S, strict=True)


def test_config_map_holds_a_valid_gateway_config_matching_the_ports() -> None:
    objs = _objects(render())
    text = objs["ConfigMap"]["data"]["portway.yaml"]
    cfg = load_config_text(
        text, "configmap", env={"PORTWAY_ADMIN_TOKEN": "t", "REDIS_URL": "redis://r:6379/0"}
    )
    ports = {
        p["name"]: p["containerPort"]
        for p in objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert cfg.listeners[0].address.endswith(f":{ports['http']}")
    assert cfg.admin.address.endswith(f":{ports['admin']}")
    assert cfg.state.backend == "redis"


def test_config_checksum_annotation_rolls_the_pods_on_change() -> None:
    values = load_values()
    objs = _objects(render(values))
    ann = objs["Deployment"]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert ann == hashlib.sha256(render_file("configmap.yaml", values).encode()).hexdigest()
    changed = copy.deepcopy(values)
    changed["config"]["routes"][0]["match"]["paths"] = ["/people"]
    ann2 = _objects(render(changed))["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert ann2["checksum/config"] != ann


def test_pod_is_non_root_read_only_with_probes_on_the_gateway() -> None:
    dep = _objects(render())["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's USER
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert {"/healthz", "/readyz"} <= PATHS
    assert (
        c["image"] == f"portway:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}"
    )


def test_selectors_and_targets_agree() -> None:
    objs = _objects(render())
    labels = objs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert objs["Deployment"]["spec"]["selector"]["matchLabels"] == labels
    assert objs["Service"]["spec"]["selector"] == labels
    assert objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    ref = objs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", objs["Deployment"]["metadata"]["name"])
    vol = next(
        v
        for v in objs["Deployment"]["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "config"
    )
    assert vol["configMap"]["name"] == objs["ConfigMap"]["metadata"]["name"]


@pytest.mark.parametrize("switch", ["podDisruptionBudget", "autoscaling"])
def test_optional_objects_can_be_switched_off(switch: str) -> None:
    values = load_values()
    values[switch]["enabled"] = False
    kinds = set(_objects(render(values)))
    assert {"podDisruptionBudget": "PodDisruptionBudget", "autoscaling": "HorizontalPodAutoscaler"}[
        switch
    ] not in kinds


def test_service_monitor_scrapes_the_admin_port_with_the_token() -> None:
    values = load_values()
    values["serviceMonitor"]["enabled"] = True
    objs = _objects(render(values))
    sm = objs["ServiceMonitor"]
    # no schema for this CRD in kubernetes-validate: check its shape and references
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    ep = sm["spec"]["endpoints"][0]
    assert ep["path"] == "/metrics"
    assert ep["port"] in {p["name"] for p in objs["Service"]["spec"]["ports"]}
    assert ep["bearerTokenSecret"] == {"name": "portway-admin", "key": "token"}
    assert sm["spec"]["selector"]["matchLabels"] == objs["Service"]["spec"]["selector"]


def test_unsupported_template_syntax_is_refused(tmp_path: Any, monkeypatch: Any) -> None:
    import tests.deploy.chart as chart

    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "x.yaml").write_text("a: {{ default 1 .Values.b }}\n")
    monkeypatch.setattr(chart, "CHART", tmp_path)
    with pytest.raises(AssertionError, match="outside the supported forms"):
        chart.render_file("x.yaml", {})

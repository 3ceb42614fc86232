"""Renders the Helm chart without ``helm`` (not installable here: no Go toolchain, no
package carries it), honestly: the chart's templates are restricted to the handful of
forms below, each replaced exactly as Helm would, and anything else left in a template
fails the test. What comes out is checked against the Kubernetes JSON schemas
(``kubernetes-validate``, the schemas kubeconform uses) and for cross-object consistency.

Forms (``V`` is a dotted ``.Values``/``.Release``/``.Chart`` path):
``{{ V }}``, ``{{ V | quote }}``, ``{{- toYaml V | nindent N }}``,
``{{ include (print $.Template.BasePath "/FILE") . | sha256sum }}``, and a whole file
wrapped in ``{{- if V }}`` … ``{{- end }}``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "portway"
RELEASE = {"Name": "pw", "Namespace": "default"}

_PATH = r"\.(?:Values|Release|Chart)(?:\.\w+)+"
_IF = re.compile(r"\A\{\{- if (" + _PATH + r") \}\}\n(.*)\n\{\{- end \}\}\n?\Z", re.S)
_TOYAML = re.compile(r"\s*\{\{- toYaml (" + _PATH + r") \| nindent (\d+) \}\}")
_INCLUDE = re.compile(
    r'\{\{ include \(print \$\.Template\.BasePath "/([\w.-]+)"\) \. \| sha256sum \}\}'
)
_VALUE = re.compile(r"\{\{ (" + _PATH + r")( \| quote)? \}\}")


def load_values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def _chart_meta() -> dict[str, Any]:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    # Helm exposes Chart.yaml's fields capitalised (.Chart.AppVersion, .Chart.Name)
    return {k[0].upper() + k[1:]: v for k, v in meta.items()}


def _lookup(path: str, values: dict[str, Any]) -> Any:
    root, *rest = path.lstrip(".").split(".")
    cur: Any = {"Values": values, "Release": RELEASE, "Chart": _chart_meta()}[root]
    for part in rest:
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(f"{path}: no such value")
        cur = cur[part]
    return cur


def _to_yaml(v: Any) -> str:
    # Helm's toYaml goes through JSON: keys sorted, no anchors
    return yaml.safe_dump(json.loads(json.dumps(v)), sort_keys=True, default_flow_style=False)


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        raise TypeError("a map or list needs toYaml")
    return str(v)


def render_file(name: str, values: dict[str, Any]) -> str:
    text = (CHART / "templates" / name).read_text()
    m = _IF.match(text)
    if m:
        if not _lookup(m.group(1), values):
            return ""
        text = m.group(2) + "\n"

    def toyaml(m: re.Match[str]) -> str:
        pad = " " * int(m.group(2))
        body = _to_yaml(_lookup(m.group(1), values)).rstrip("\n")
        return "".join("\n" + pad + line for line in body.split("\n"))

    text = _TOYAML.sub(toyaml, text)
    text = _INCLUDE.sub(
        lambda m: hashlib.sha256(render_file(m.group(1), values).encode()).hexdigest(), text
    )

    def value(m: re.Match[str]) -> str:
        v = _scalar(_lookup(m.group(1), values))
        return json.dumps(v) if m.group(2) else v

    text = _VALUE.sub(value, text)
    if "{{" in text or "}}" in text:
        left = re.findall(r"\{\{.*?\}\}", text)
        raise AssertionError(f"{name}: template syntax outside the supported forms: {left}")
    return text


def render(values: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every template's objects, by file name (files rendering to nothing map to [])."""
    vals = copy.deepcopy(values if values is not None else load_values())
    out: dict[str, list[dict[str, Any]]] = {}
    for f in sorted((CHART / "templates").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(render_file(f.name, vals)) if d]
        out[f.name] = docs
    return out

"""The rules docs/architecture.md sets for the mypyc-compiled modules ("Compiled hot path"),
checked on their source: breaking one costs per request silently (the build still works),
so a change that breaks one fails here instead of in a benchmark weeks later."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _hot_modules() -> list[str]:
    text = (ROOT / "setup.py").read_text()
    block = text[text.index("HOT_MODULES = [") : text.index("]", text.index("HOT_MODULES = ["))]
    return re.findall(r'"(src/portway/[^"]+\.py)"', block)


HOT = _hot_modules()
#: classes built per request: their __init__ must be written out (compiled), not generated
PER_REQUEST = {"Request", "Response", "RouteMatch"}
#: seams called on every request: compiled base classes, never typing.Protocol
SEAMS = {"ResponseSink", "App", "Balancer", "Observer"}


def _tree(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(), path)


def test_the_hot_module_list_is_read() -> None:
    assert len(HOT) >= 20
    for p in HOT:
        assert (ROOT / p).exists(), p


@pytest.mark.parametrize("path", HOT)
def test_module_constants_are_final(path: str) -> None:
    bad = []
    for node in _tree(path).body:
        if isinstance(node, ast.Assign):
            if isinstance(node.value, ast.Call) and ast.unparse(node.value.func).endswith(
                "TypeVar"
            ):
                continue
            for t in node.targets:
                if isinstance(t, ast.Name) and re.fullmatch(r"_?[A-Z][A-Z0-9_]*", t.id):
                    bad.append(f"{path}:{node.lineno} {t.id} (annotate it Final)")
    assert not bad, bad


@pytest.mark.parametrize("path", HOT)
def test_per_request_classes_and_seams(path: str) -> None:
    bad = []
    for node in ast.walk(_tree(path)):
        if not isinstance(node, ast.ClassDef):
            continue
        if node.name in PER_REQUEST:
            has_init = any(
                isinstance(n, ast.FunctionDef) and n.name == "__init__" for n in node.body
            )
            if not has_init:
                bad.append(f"{path}:{node.lineno} {node.name} needs a written __init__")
        if node.name in SEAMS and any(ast.unparse(b).endswith("Protocol") for b in node.bases):
            bad.append(f"{path}:{node.lineno} {node.name} must be a base class")
    assert not bad, bad


@pytest.mark.parametrize("path", HOT)
def test_no_slow_spellings(path: str) -> None:
    """``parts += (a, b)`` on a list and a one-byte ``b"x" in data`` search."""
    bad = []
    for node in ast.walk(_tree(path)):
        if (
            isinstance(node, ast.AugAssign)
            and isinstance(node.op, ast.Add)
            and isinstance(node.value, ast.Tuple)
        ):
            bad.append(f"{path}:{node.lineno} += (tuple): use append")
        if isinstance(node, ast.Compare) and any(isinstance(o, ast.In) for o in node.ops):
            left = node.left
            if (
                isinstance(left, ast.Constant)
                and isinstance(left.value, bytes)
                and len(left.value) == 1
            ):
                bad.append(f"{path}:{node.lineno} one-byte bytes needle: use its int")
    assert not bad, bad


def test_seam_classes_exist_where_documented() -> None:
    found: set[str] = set()
    for path in HOT:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ClassDef) and node.name in SEAMS | PER_REQUEST:
                found.add(node.name)
    assert found == SEAMS | PER_REQUEST, sorted((SEAMS | PER_REQUEST) - found)

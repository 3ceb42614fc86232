"""Imports go one way (docs/architecture.md, "One request path"): a module may import its
own package and the layers below it, never a layer above. Checked on the source of every
module under src/portway — module-level and function-level imports alike (a lazy import is
still a dependency), only ``if TYPE_CHECKING:`` blocks excepted."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "portway"

#: the layers, bottom first: http ← pipeline ← config ← routing/upstream/state ←
#: observability ← plugins ← proxy ← runtime ← server/admin/cli
LAYER: dict[str, int] = {
    "errors": 0,
    "tasks": 0,
    "digest": 0,
    "http": 1,
    "pipeline": 2,
    "config": 3,
    "routing": 4,
    "upstream": 4,
    "state": 4,
    "observability": 5,
    "plugins": 6,
    "proxy": 7,
    "runtime": 8,
    "server": 9,
    "admin": 9,
    "cli": 9,
    "demo": 9,
    "testing": 9,
    "__main__": 9,
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for n in node.orelse:
                self.visit(n)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name.startswith("portway."):
                self.found.append((node.lineno, a.name))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        assert node.level == 0, "relative imports are not used in src/portway"
        mod = node.module or ""
        if mod == "portway":
            self.found.extend((node.lineno, f"portway.{a.name}") for a in node.names)
        elif mod.startswith("portway."):
            self.found.append((node.lineno, mod))


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts)
        out.append((name.removesuffix(".__init__"), path))
    return out


def test_every_package_has_a_layer() -> None:
    packages = {_package(m) for m, _ in _modules()} - {""}
    assert packages <= set(LAYER), packages - set(LAYER)


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward: list[str] = []
    for module, path in _modules():
        here = LAYER.get(_package(module), 0)
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(), str(path)))
        for line, target in visitor.found:
            there = LAYER.get(_package(target), 0)
            if there > here:
                upward.append(f"{path.relative_to(SRC.parent)}:{line} {module} -> {target}")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_http_server_loads_no_pydantic_nor_opentelemetry() -> None:
    code = (
        "import sys, portway.http.server, portway.http.h2, portway.http.pool\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'opentelemetry', 'portway') and not m.startswith(('portway.http', "
        "'portway.errors')) and m != 'portway')\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", out.stdout

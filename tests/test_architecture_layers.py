"""Imports flow downwards only, as docs/architecture.md draws the layers."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sincere"

# Higher numbers sit higher in the diagram; a module may import its own rank or lower.
RANK = {
    "core": 0,
    "catalog": 1,
    "workload": 1,
    "perf": 2,
    "predict": 2,
    "estimate": 2,
    "policy": 3,
    "engine": 4,
    "sim": 5,
    "optimize": 6,
    "serve": 7,
    "bench": 7,
    "profile": 7,
    "fit": 7,
    "experiment": 7,
    "cli": 8,
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "sincere" and len(parts) > 1 and parts[1] in RANK:
                found.add(parts[1])
    return found


def test_every_subpackage_has_a_rank() -> None:
    """A new top-level sub-package must be placed in the layer diagram (and here)."""
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(RANK), sorted(packages - set(RANK))


def test_imports_flow_downwards() -> None:
    """No module imports a sub-package that sits above its own layer."""
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if len(rel.parts) < 2 or rel.parts[0] not in RANK:
            continue
        own = RANK[rel.parts[0]]
        for target in _imports(path):
            if RANK[target] > own:
                upward.append(f"{rel} imports sincere.{target}")
    assert upward == []

"""Time in one place: `workflows.clock` defines the `Clock` type, and every module takes it from
there (a second definition would be a second type for mypy to reconcile)."""

from __future__ import annotations

import ast
from pathlib import Path

import workflows

PACKAGE = Path(workflows.__file__).parent
ROOTS = (PACKAGE, Path(__file__).parents[2] / "devstack", Path(__file__).parents[1])


def _sources() -> list[Path]:
    return sorted(path for root in ROOTS for path in root.rglob("*.py"))


def _defines(tree: ast.Module, name: str) -> bool:
    """Whether the module binds `name` at its top level (an assignment or a class)."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return True
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return True
    return False


def test_clock_is_defined_in_workflows_clock_only() -> None:
    defining = [path for path in _sources() if _defines(ast.parse(path.read_text()), "Clock")]
    assert defining == [PACKAGE / "clock.py"]


def test_every_module_takes_clock_from_workflows_clock() -> None:
    elsewhere = [
        f"{path}:{node.lineno} from {node.module}"
        for path in _sources()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        and node.module != "workflows.clock"
        and any(alias.name == "Clock" for alias in node.names)
    ]
    assert elsewhere == []

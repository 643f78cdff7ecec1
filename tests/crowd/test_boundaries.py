"""The marketplace is a separate service: the rest of crowd/ reaches it only through boto3."""
from __future__ import annotations

import ast
from pathlib import Path

CROWD = Path(__file__).resolve().parents[2] / "crowd"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_nothing_in_crowd_outside_the_marketplace_imports_it():
    offenders = {
        str(path.relative_to(CROWD.parent)): sorted(m for m in imported_modules(path) if m.startswith("crowd.marketplace"))
        for path in CROWD.rglob("*.py")
        if "marketplace" not in path.relative_to(CROWD).parts
    }
    offenders = {path: mods for path, mods in offenders.items() if mods}
    assert offenders == {}
    # The check is real: the marketplace's own modules do import themselves.
    assert any(m.startswith("crowd.marketplace") for m in imported_modules(CROWD / "marketplace" / "views.py"))

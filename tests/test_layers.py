"""Data flows one way (sweep file -> run config -> run directory -> evals -> analysis), and so do imports:
no module imports from a layer above its own. Checked on the source, so a lazy import inside a function
counts too."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# package -> modules it must never import (each prefix covers its submodules)
FORBIDDEN = {
    "harness/model": ("harness.training", "harness.sweeps", "harness.data", "evals", "analysis"),
    "harness/kernels": ("harness.training", "harness.sweeps", "harness.data", "evals", "analysis"),
    "harness/data": ("harness.training", "harness.sweeps", "harness.model", "evals", "analysis"),
    "harness/training": ("harness.sweeps", "evals", "analysis"),
    "harness/sweeps": ("analysis",),
    "evals": ("harness.sweeps", "analysis"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_back_up_a_layer(package):
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in sorted((REPO / package).rglob("*.py"))
        for line, name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[package])
    ]
    assert not bad, "\n".join(bad)

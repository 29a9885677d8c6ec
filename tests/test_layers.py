"""Data flows one way (sweep file -> run config -> run directory -> evals -> analysis), and so do imports: no
module imports from a layer above its own. Checked on the source, so a lazy import inside a function counts
too. The house, from the ground up (README, "The house"):

    harness/   the library: model, kernels, data, training (run directories, checkpoints, loading a run),
               benchmarks, export; each area registers its own commands
    evals/     evaluation suites over run directories
    sweeps/    the sweep machinery: sweep files -> runs, launch, jobs, lifecycle, scheduler
    analysis/  tables, figures and reports from run directories (and sweep files, to find them)
    ablate/    the command line: a list of the registrars above
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("harness", "evals", "sweeps", "analysis", "ablate")  # bottom to top
# Inside the library: its own floors (package -> the library packages it must not import).
LIBRARY = {
    "harness/model": ("harness.training", "harness.data", "harness.benchmarks", "harness.export"),
    "harness/kernels": ("harness.training", "harness.data", "harness.model", "harness.benchmarks"),
    "harness/data": ("harness.training", "harness.model", "harness.benchmarks", "harness.export"),
    "harness/training": ("harness.benchmarks", "harness.export"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _offences(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in sorted((REPO / package).rglob("*.py"))
        for line, name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_imports_one_above_it(layer):
    above = LAYERS[LAYERS.index(layer) + 1 :]
    bad = _offences(layer, above)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", sorted(LIBRARY))
def test_the_library_keeps_its_own_floors(package):
    bad = _offences(package, LIBRARY[package])
    assert not bad, "\n".join(bad)


def test_every_package_is_a_layer():
    """A new top-level package must be placed in LAYERS (and in the README's picture of the house)."""
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages == set(LAYERS), packages

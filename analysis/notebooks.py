"""The notebooks in ``notebooks/``: run them top to bottom with parameters, render them to HTML, and keep
them stored without outputs.

* Parameters, papermill style: the cell tagged ``parameters`` holds the defaults; :func:`inject` adds a
  cell tagged ``injected-parameters`` after it that overrides them (``papermill -p NAME VALUE`` does the
  same, so papermill can run these notebooks too). A name the parameters cell does not define is refused.
* :func:`execute` runs a notebook in a fresh kernel (nbclient; the current interpreter's ipykernel) and
  raises ``nbclient.exceptions.CellExecutionError`` at the first failing cell, so a test or a CI job
  fails on any cell error.
* :func:`render` writes the executed notebook and a self-contained HTML page (figures inline) to a folder
  outside the repository's notebooks (default ``reports/notebooks/``, which git ignores).
* Stored notebooks carry no outputs, execution counts or widget state (:func:`problems`, checked by the
  test suite; :func:`strip` or ``python -m analysis.notebooks strip`` cleans them). Diffs of a stored
  notebook are its cell sources only.

``ablate notebook NAME --runs SWEEP.yaml|RUN_DIR ... [--out DIR] [-p KEY=VALUE]`` renders one notebook for
sharing (registered by :func:`add_notebook_commands`).
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from harness.config_errors import ConfigError, did_you_mean

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
DEFAULT_OUT = Path("reports") / "notebooks"
NO_SCRIPT = "data:text/javascript,"  # an empty script: what the HTML page loads instead of CDN libraries


def available() -> list[str]:
    """Names of the notebooks in ``notebooks/`` (without ``.ipynb``)."""
    return sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


def notebook_path(name: str | Path) -> Path:
    """A notebook by name (``attention_heads``) or by path."""
    path = Path(name)
    if path.suffix == ".ipynb" and path.is_file():
        return path
    found = NOTEBOOKS / f"{path.stem}.ipynb"
    if not found.is_file():
        names = available()
        raise ConfigError(
            f"no notebook '{name}'." + did_you_mean(str(name), names) + f" Notebooks: {', '.join(names)}"
        )
    return found


def read(path: str | Path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def parameter_names(nb) -> list[str]:
    """Names assigned in the notebook's ``parameters`` cell."""
    cells = [c for c in nb.cells if PARAMETERS_TAG in _tags(c)]
    if len(cells) != 1:
        raise ConfigError(f"a notebook needs exactly one cell tagged '{PARAMETERS_TAG}', found {len(cells)}")
    names = []
    for node in ast.parse(cells[0].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def inject(nb, parameters: dict[str, Any]):
    """A copy of ``nb`` with a cell tagged ``injected-parameters`` after the parameters cell that sets
    ``parameters`` (Python literals)."""
    import nbformat

    nb = copy.deepcopy(nb)
    valid = parameter_names(nb)
    for name in parameters:
        if name not in valid:
            raise ConfigError(
                f"the notebook has no parameter '{name}'." + did_you_mean(name, valid) + f" Parameters: "
                f"{', '.join(valid)}"
            )
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in _tags(c)]
    at = next(i for i, c in enumerate(nb.cells) if PARAMETERS_TAG in _tags(c))
    source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": [INJECTED_TAG]})
    nb.cells.insert(at + 1, cell)
    return nb


def execute(
    notebook,
    parameters: dict[str, Any] | None = None,
    cwd: str | Path | None = None,
    timeout: int = 600,
    kernel_name: str = "python3",
):
    """Run ``notebook`` (a path or a NotebookNode) top to bottom in a new kernel started in ``cwd``
    (default: the current directory) and return the executed copy; raises
    ``nbclient.exceptions.CellExecutionError`` at the first cell that fails."""
    from nbclient import NotebookClient

    nb = read(notebook) if isinstance(notebook, (str, Path)) else copy.deepcopy(notebook)
    if parameters:
        nb = inject(nb, parameters)
    env = dict(os.environ)
    # The kernel imports this checkout even when it is not installed (a clone run with PYTHONPATH).
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(cwd or Path.cwd())}},
        allow_errors=False,
        record_timing=False,
    )
    client.execute(env=env)
    return nb


def to_html(nb, path: str | Path) -> Path:
    """A self-contained HTML page of an executed notebook (figures are inline PNGs, no script is fetched
    from the network). Widget views, which need a live kernel, are replaced by a note."""
    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                data.pop(WIDGET_VIEW)
                data["text/plain"] = "[interactive widget: open the notebook in Jupyter to use it]"
    # Nothing loaded from a CDN: the page needs neither MathJax nor require.js (no math, no widget views;
    # mermaid is only fetched for diagrams, which these notebooks have none of), so it reads offline.
    exporter = HTMLExporter(template_name="lab", mathjax_url=NO_SCRIPT, require_js_url=NO_SCRIPT)
    body, _ = exporter.from_notebook_node(nb)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


def render(
    name: str | Path,
    parameters: dict[str, Any],
    out: str | Path = DEFAULT_OUT,
    cwd: str | Path | None = None,
    timeout: int = 600,
) -> tuple[Path, Path]:
    """Execute notebook ``name`` with ``parameters`` and write ``out/<name>.ipynb`` and ``out/<name>.html``
    (never into ``notebooks/``); returns both paths."""
    import nbformat

    source = notebook_path(name)
    out = Path(out)
    if out.resolve() == source.parent.resolve():
        raise ConfigError(f"--out {out} is where the stored notebooks live; choose another folder")
    nb = execute(source, parameters, cwd=cwd, timeout=timeout)
    out.mkdir(parents=True, exist_ok=True)
    executed = out / source.name
    nbformat.write(nb, str(executed))
    return executed, to_html(nb, out / f"{source.stem}.html")


def problems(nb) -> list[str]:
    """Why a stored notebook is not clean: outputs, execution counts, widget state, execution timings."""
    found = []
    if "widgets" in nb.metadata:
        found.append("notebook metadata holds widget state")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            found.append(f"cell {i} has outputs")
        if cell.get("execution_count") is not None:
            found.append(f"cell {i} has execution count {cell.execution_count}")
        if "execution" in cell.get("metadata", {}):
            found.append(f"cell {i} has execution timings in its metadata")
        if INJECTED_TAG in _tags(cell):
            found.append(f"cell {i} is an injected-parameters cell")
    return found


def strip(nb):
    """``nb`` without outputs, execution counts, widget state, timings or injected parameters."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in _tags(c)]
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def show(fig, name: str, folder: str | Path | None = None, dpi: int = 150) -> None:
    """Display a matplotlib Figure in the notebook (as a PNG, whatever the backend) and, with ``folder``,
    save it there as ``<name>.png`` too."""
    import io

    from IPython.display import Image, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    png = buffer.getvalue()
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.png").write_bytes(png)
    width = min(int(fig.get_figwidth() * 140), 1000)  # about the width of a notebook's output area
    display(Image(data=png, width=width, metadata={"name": name}))


def show_table(frame, name: str, folder: str | Path | None = None) -> None:
    """Display a DataFrame and, with ``folder``, save it there as ``<name>.csv``."""
    from IPython.display import display

    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        frame.to_csv(Path(folder) / f"{name}.csv", index=False)
    display(frame)


def parse_parameter(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as YAML (``top_k=6``, ``attention_options={limit: 4}``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"-p expects KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def cmd_notebook(args: argparse.Namespace) -> int:
    parameters = dict(parse_parameter(p) for p in args.param or [])
    parameters["runs"] = list(args.runs)
    if args.root is not None:
        parameters["root"] = args.root
    from nbclient.exceptions import CellExecutionError

    try:
        executed, page = render(args.name, parameters, out=args.out, timeout=args.timeout)
    except CellExecutionError as e:
        print(f"notebook {args.name} failed:\n{e}", file=sys.stderr)
        return 1
    print(f"executed notebook: {executed.resolve()}")
    print(f"open {page.resolve()}")
    return 0


def add_notebook_commands(subparsers) -> None:
    """Register ``notebook`` on the ``ablate`` subparsers (sets ``func``)."""
    p = subparsers.add_parser(
        "notebook",
        help="run a notebook of notebooks/ on runs and render it to HTML",
        description="Execute a notebook of notebooks/ top to bottom on the given runs (its parameters cell "
        "overridden, papermill style) and write the executed notebook and a self-contained HTML page to "
        f"--out (default {DEFAULT_OUT}); the stored notebook is left as it is. Notebooks: "
        f"{', '.join(available())}.",
    )
    p.add_argument("name", help="notebook name, e.g. attention_heads or ablation_results")
    p.add_argument(
        "--runs",
        nargs="+",
        required=True,
        metavar="SWEEP.yaml|RUN_DIR",
        help="sweep files, sweep folders (runs/<sweep>) or run directories",
    )
    p.add_argument("--root", default=None, help="folder holding <sweep>/<arm>-<run id>/ (default: runs)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument(
        "-p",
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="another notebook parameter, VALUE as YAML (repeatable), e.g. -p top_k=6 (default: none)",
    )
    p.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default: 1800)")
    p.set_defaults(func=cmd_notebook)


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.notebooks check|strip [NOTEBOOK ...]`` (default: every stored notebook)."""
    import nbformat

    parser = argparse.ArgumentParser(prog="python -m analysis.notebooks")
    parser.add_argument("action", choices=("check", "strip"))
    parser.add_argument("paths", nargs="*", help="notebooks (default: notebooks/*.ipynb)")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.paths] or sorted(NOTEBOOKS.glob("*.ipynb"))
    bad = 0
    for path in paths:
        nb = read(path)
        found = problems(nb)
        if args.action == "strip" and found:
            nbformat.write(strip(nb), str(path))
            print(f"{path}: stripped ({'; '.join(found)})")
        elif found:
            bad += 1
            print(f"{path}: {'; '.join(found)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

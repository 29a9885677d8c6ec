"""The notebooks in notebooks/ executed top to bottom on tiny runs trained here (nbclient, one kernel per
notebook run), failing on any cell error; the figures each one must show checked by name; a broken cell
failing the run; the stored notebooks free of outputs and of logic of their own; ``ablate notebook``
rendering HTML outside the repository; and, on a model trained to copy against the same model untrained,
the top induction head's prefix-matching score."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest

# The notebooks extra (pyproject); without it (the GPU machine) this module skips instead of failing
# collection, so `pytest -m gpu tests` runs there.
nbformat = pytest.importorskip("nbformat", reason="needs the notebooks extra: pip install -e .[notebooks]")
CellExecutionError = pytest.importorskip("nbclient.exceptions").CellExecutionError

from notebook_fixture import copy_pair, launch_sweep  # noqa: E402

from analysis import notebooks  # noqa: E402

ATTENTION_FIGURES = {
    "head-scores",
    "fig7-tokens-attention",
    "fig7-tokens-1-7",
    "fig7-bars",
    "patterns-repeated",
    "patterns-prompt",
    "atlas-attention",
    "atlas-1-7",
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, eval_packs):
    """A toy Table 4 sweep (attention, Mamba, 1:7), trained and evaluated by the launcher."""
    return launch_sweep(tmp_path_factory.mktemp("nb-sweep"))


def _figures(nb) -> list[str]:
    """Names of the figures an executed notebook displayed (analysis.notebooks.show tags each PNG)."""
    return [
        out["metadata"]["image/png"]["name"]
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if "name" in out.get("metadata", {}).get("image/png", {})
    ]


def _outputs_text(nb) -> str:
    return "\n".join(
        out.get("text", "") + out.get("data", {}).get("text/plain", "")
        for cell in nb.cells
        for out in cell.get("outputs", [])
    )


@pytest.mark.parametrize("path", sorted(notebooks.NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_stored_notebooks_are_clean(path):
    """Stored without outputs (diffs are sources only), one parameters cell, and no logic of their own:
    no function or class is defined in a cell (plotting and scoring live in analysis/ and evals/)."""
    nb = notebooks.read(path)
    nbformat.validate(nb)
    assert notebooks.problems(nb) == [], f"run `python -m analysis.notebooks strip {path}`"
    assert notebooks.parameter_names(nb)[:2] == ["runs", "root"]
    for cell in nb.cells:
        if cell.cell_type == "code":
            tree = ast.parse(cell.source)
            defs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.Lambda)]
            assert not defs, f"{path.name}: a cell defines {type(defs[0]).__name__}; put it in analysis/"


def test_the_check_finds_outputs_and_strip_removes_them(tmp_path):
    nb = notebooks.read(notebooks.notebook_path("ablation_results"))
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", text="hi\n")]
    code.execution_count = 3
    nb.metadata["widgets"] = {"state": {}}
    injected = notebooks.inject(nb, {"runs": ["x.yaml"]})
    found = notebooks.problems(injected)
    assert len(found) == 4 and "holds widget state" in found[0]
    assert any("has outputs" in p for p in found) and any("execution count 3" in p for p in found)
    assert notebooks.problems(notebooks.strip(injected)) == []
    path = tmp_path / "dirty.ipynb"
    nbformat.write(injected, str(path))
    assert notebooks.main(["check", str(path)]) == 1
    assert notebooks.main(["strip", str(path)]) == 0 and notebooks.main(["check", str(path)]) == 0


def test_parameters_are_injected_papermill_style():
    nb = notebooks.read(notebooks.notebook_path("attention_heads"))
    out = notebooks.inject(nb, {"runs": ["a", "b"], "top_k": 2})
    at = next(i for i, c in enumerate(out.cells) if "parameters" in c.metadata.get("tags", []))
    injected = out.cells[at + 1]
    assert injected.metadata["tags"] == ["injected-parameters"]
    assert injected.source == "# Parameters\nruns = ['a', 'b']\ntop_k = 2\n"
    assert len(out.cells) == len(nb.cells) + 1
    with pytest.raises(notebooks.ConfigError, match="no parameter 'topk'.*Did you mean 'top_k'"):
        notebooks.inject(nb, {"topk": 2})


def test_attention_notebook_on_a_sweep(sweep, tmp_path):
    """The 1:7 and the attention arm each get their heatmaps, Fig. 7 token view and patterns; pure Mamba is
    named as having no heads; the top-heads table covers both arms."""
    path, root = sweep
    figures = tmp_path / "figures"
    nb = notebooks.execute(
        notebooks.notebook_path("attention_heads"),
        {"runs": [str(path)], "root": str(root), "figures_dir": str(figures), "top_k": 2},
        cwd=tmp_path,
    )
    assert set(_figures(nb)) == ATTENTION_FIGURES
    assert {p.stem for p in figures.glob("*.png")} == ATTENTION_FIGURES
    text = _outputs_text(nb)
    assert re.search(r"not shown: mamba: no attention layers \(pattern M-M-", text)
    assert "scoring" not in text  # both arms have their attention.json from the sweep
    top = pd.read_csv(figures / "top-heads.csv")
    assert set(top["arm"]) == {"Attention", "Jamba a:m=1:7"}
    assert set(top.loc[top["arm"] == "Jamba a:m=1:7", "layer"]) == {4}  # the 1:7 block's attention layer
    assert len(top) == 2 * 3 * 2  # arms x scores x top_k
    picker = [c for c in nb.cells if "widget-head-picker" in c.metadata.get("tags", [])][0]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in picker.outputs)
    assert not list(path.parent.glob("runs/*/*/evals/adhoc"))  # nothing written into the runs


def test_results_notebook_rendered_by_ablate_notebook(sweep, tmp_path):
    """``ablate notebook`` executes the results notebook and writes it and an HTML page outside the repo:
    Table 4 with the paper's values beside ours, the claims, the loss curves (Fig. 5)."""
    path, root = sweep
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "ablate.cli", "notebook", "ablation_results", "--runs", str(path)]
    cmd += ["--root", str(root), "--out", str(out), "-p", f"figures_dir={tmp_path / 'figures'}"]
    env = {**os.environ, "PYTHONPATH": str(notebooks.NOTEBOOKS.parent)}  # this checkout, from any cwd
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"open {out.resolve() / 'ablation_results.html'}" in done.stdout
    nb = notebooks.read(out / "ablation_results.ipynb")
    assert {"nb-table4-fig5", "nb-table4-head-scores"} <= set(_figures(nb))
    html = (out / "ablation_results.html").read_text()
    assert "Table 4" in html and "Jamba a:m=1:7" in html and "paper" in html
    assert "Paper&#x27;s claims, checked" in html or "Paper's claims, checked" in html
    assert html.count("data:image/png;base64,") >= 3
    assert "cdnjs.cloudflare.com/ajax/libs/mathjax" not in html and "require.min.js" not in html
    assert notebooks.problems(notebooks.read(notebooks.notebook_path("ablation_results"))) == []


def test_a_broken_cell_fails_the_run(tmp_path):
    """A copy of a notebook with one cell broken fails at that cell (the run stops there)."""
    nb = notebooks.read(notebooks.notebook_path("attention_heads"))
    at = next(i for i, c in enumerate(nb.cells) if c.get("id") == "imports")
    nb.cells[at].source = "raise RuntimeError('deliberately broken cell')\n" + nb.cells[at].source
    broken = tmp_path / "broken.ipynb"
    nbformat.write(nb, str(broken))
    with pytest.raises(CellExecutionError, match="deliberately broken cell"):
        notebooks.execute(broken, {"runs": [str(tmp_path)]}, cwd=tmp_path, timeout=120)


@pytest.mark.slow
def test_copy_trained_model_has_a_clear_top_induction_head(tmp_path, eval_packs):
    """The probe test's copy training, applied to a model with attention heads: its top head's
    prefix-matching score is far above the untrained model's, whose heads sit at chance (about 1/position),
    and the notebook scores both live (neither has an attention result), writing nothing into the runs."""
    untrained, trained = copy_pair(tmp_path)
    figures, scratch = tmp_path / "figures", tmp_path / "scratch"
    nb = notebooks.execute(
        notebooks.notebook_path("attention_heads"),
        {
            "runs": [str(untrained), str(trained)],
            "figures_dir": str(figures),
            "scratch": str(scratch),
            "attention_options": {"limit": 8},
        },
        cwd=tmp_path,
    )
    assert "head-scores" in _figures(nb) and "patterns-repeated" in _figures(nb)
    assert _outputs_text(nb).count("with the attention suite") == 2
    top = pd.read_csv(figures / "top-heads.csv")
    best = top[top["ranked by"] == "induction (prefix matching)"].groupby("arm")["induction_score"].max()
    before, after = best["copy (untrained)"], best["copy (copy-trained)"]
    assert before < 0.08 and after > 0.5 and after > 8 * before, best.to_dict()
    for run in (untrained, trained):
        assert not (run / "evals" / "attention.json").exists()
        assert json.loads((scratch / run.name / "attention.json").read_text())["status"] == "ok"

"""lm-eval as its users type it, offline: ``ablate lm-eval`` (lm-eval's own command line with our model
registered) on a run directory, and lm-eval's own ``lm_eval --model hf`` on an export; both write lm-eval's
result files, and neither floods the output with task-override warnings or stray git errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ablate.cli import main
from evals.benchmark_data import lm_eval_task_dir, prepare_benchmarks

pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # lm-eval's HF model imports it: part of the hf extra
VENV_BIN = Path(sys.executable).parent
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _results(folder: Path) -> dict:
    (path,) = folder.rglob("results_*.json")
    return json.loads(path.read_text())


def _clean(output: str) -> None:
    assert "overrides existing task" not in output
    assert "fatal: not a git repository" not in output


@pytest.fixture(scope="module")
def task_copies() -> Path:
    prepare_benchmarks(echo=lambda *_: None)
    return lm_eval_task_dir()


def test_ablate_lm_eval_runs_lm_evals_command_line_on_a_run(hybrid_run, task_copies, tmp_path):
    out = tmp_path / "results"
    argv = ["lm-eval", "--model", "jamba-ablate", "--model_args", f"pretrained={hybrid_run}"]
    argv += ["--tasks", "arc_easy", "--limit", "5", "--output_path", str(out)]
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "ablate.cli", *argv], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _clean(done.stdout + done.stderr)
    assert "offline: lm-eval's tasks read their local copies" in done.stdout
    results = _results(out)
    assert 0 <= results["results"]["arc_easy"]["acc,none"] <= 1
    assert results["config"]["model"] == "jamba-ablate" and results["n-samples"]["arc_easy"]["effective"] == 5
    assert len(results["git_hash"]) == 40  # the harness's commit, whatever the working directory


def test_lm_evals_own_hf_model_runs_an_export(hybrid_run, task_copies, tmp_path):
    export = tmp_path / "hf"
    assert main(["export", "hf", str(hybrid_run), str(export)]) == 0
    out = tmp_path / "results"
    argv = ["--model", "hf", "--model_args", f"pretrained={export},dtype=float32", "--device", "cpu"]
    argv += [
        "--tasks",
        "arc_easy",
        "--limit",
        "5",
        "--include_path",
        str(task_copies),
        "--output_path",
        str(out),
    ]
    done = subprocess.run(
        [str(VENV_BIN / "lm_eval"), *argv], capture_output=True, text=True, env={**os.environ, **OFFLINE}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = _results(out)
    assert 0 <= results["results"]["arc_easy"]["acc,none"] <= 1
    assert results["n-samples"]["arc_easy"]["effective"] == 5


def test_ablate_lm_eval_hands_every_argument_on(monkeypatch):
    seen = {}
    monkeypatch.setattr("evals.lm_eval_model.cli_main", lambda argv: seen.setdefault("argv", argv) and 0)
    argv = ["--model", "jamba-ablate", "--tasks", "arc_easy", "-h"]
    main(["lm-eval", *argv])
    assert seen["argv"] == argv
    with pytest.raises(SystemExit):  # other commands still refuse what they do not know
        main(["presets", "--model", "x"])

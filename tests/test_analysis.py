"""The analysis layer on synthetic run directories in the exact on-disk format (tests/analysis_fixture.py):
tidy frames, the paper's values with provenance, exact table cells (mean +- std over two seeds, best arm,
deltas, "—" with the reason), claims' verdicts, the report folder and the CLI's errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import analysis_fixture as fx
import pandas as pd
import pytest
import yaml

from ablate.cli import main
from analysis import render
from analysis.claims import check_claim
from analysis.frames import load_frames
from analysis.measure import measure
from analysis.paper import ClaimSpec, Compare, load_paper
from analysis.report import build_report
from analysis.runs import RunRef, load_runs, read_run
from analysis.tables import paper_table, summary_table, table1
from harness.config_errors import ConfigError

TABLE4 = {
    "table": "table4",
    "baseline": "attention",
    "rows": {"attention": "Attention", "mamba": "Mamba", "1:3": "Jamba a:m=1:3", "1:7": "Jamba a:m=1:7"},
}
TABLE6 = {
    "table": "table6",
    "baseline": "attention",
    "rows": {"attention": "Attention", "mamba": "Mamba", "1:7": "Attention-Mamba (1:7)"},
}
OLLM_MISSING = {"truthfulqa_mc2": "no offline copy"}


def ollm(value: float) -> dict:
    tasks = {
        t: ("acc", value, 0.02, 100, 5) for t in ("arc_challenge", "hellaswag", "mmlu", "winogrande", "gsm8k")
    }
    return fx.lm_eval(tasks, OLLM_MISSING)


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory):
    """table4-synth: attention and 1:3 with two finished seeds each, 1:7 finished with a failed ablation
    eval, mamba with one run still training and one failed."""
    root = tmp_path_factory.mktemp("runs")
    compare = [TABLE4, TABLE6]

    def run(arm, seed, preset, hs, c4, val, **kw):
        evals = {
            "ablation": fx.ablation(hs, 0.5 + hs / 10, hs / 10),
            "perplexity": fx.perplexity(c4, c4 - 0.5, c4 - 0.7),
            "ollm": ollm(hs / 2),
            "icl": fx.icl(0.6, 0.9, 0.55, off_format=[("Great", 3), ("3/10", 2)]),
        }
        evals = {k: v for k, v in evals.items() if k not in kw.get("skip", ())}
        kw.pop("skip", None)
        return fx.write_run(
            root,
            "table4-synth",
            arm,
            seed=seed,
            preset=preset,
            evals=evals,
            val_losses={5: val + 0.5, 10: val},
            compare=compare,
            **kw,
        )

    run("attention", 0, "tiny-attention", 0.30, -1.60, 6.2)
    run("attention", 1, "tiny-attention", 0.32, -1.62, 6.3)
    run("1:3", 0, "tiny-1to3", 0.40, -1.50, 5.9)
    run("1:3", 1, "tiny-1to3", 0.42, -1.52, 5.8)
    run(
        "1:7",
        0,
        "tiny-1to7",
        0.41,
        -1.51,
        5.85,
        skip=("ablation",),
        eval_errors={"ablation": "RuntimeError: boom"},
    )
    fx.write_run(root, "table4-synth", "mamba", preset="tiny-mamba", state="running", step=5, compare=compare)
    fx.write_run(
        root,
        "table4-synth",
        "mamba",
        seed=1,
        preset="tiny-mamba",
        state="failed",
        step=3,
        error="non-finite loss nan at step 3",
        compare=compare,
    )
    return root


@pytest.fixture(scope="module")
def frames(sweep_root):
    return load_frames(load_runs([sweep_root / "table4-synth"]))


def md_cells(md: str) -> dict[tuple[str, str], str]:
    """(row label, column header) -> cell text of a Markdown table; a "paper" column is named after the
    metric it follows ("C4 ↑ paper")."""
    lines = [line for line in md.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split(" | ")]
    head = [h if h != "paper" else head[i - 1].replace(" ours", " paper") for i, h in enumerate(head)]
    cells = {}
    for line in lines[2:]:
        row = [c.strip() for c in line.strip("|").split(" | ")]
        for h, c in zip(head, row, strict=True):
            cells[(row[0], h)] = c
    return cells


def test_runs_frame_reads_run_json_or_falls_back(tmp_path, frames):
    runs = frames.runs.set_index(["arm", "seed"])
    assert runs.loc[("1:3", 1), "arm_source"] == "run.json"
    assert runs.loc[("1:3", 1), "shorthand"] == "l=8 a:m=1:3 (offset 2)"
    assert runs.loc[("mamba", 0), "state"] == "running" and runs.loc[("mamba", 1), "state"] == "failed"
    assert runs.loc[("attention", 0), "tokens"] == 10 * fx.TOKENS_PER_STEP

    legacy = fx.write_run(
        tmp_path / "runs", "old-sweep", "1:7", run_json=False, val_losses={10: 5.0}, heldout_event="eval"
    )
    records = [r for r in (legacy / "metrics.jsonl").read_text().splitlines() if "val_loss" not in r]
    (legacy / "metrics.jsonl").write_text("\n".join(records) + "\n")  # held-out loss only as an event
    (run,) = load_runs([legacy])
    assert (run.arm, run.arm_source, run.sweep) == ("1to7", "directory name (slug)", "old-sweep")
    assert run.run_id == legacy.name.rsplit("-", 1)[1] and run.seed == 0
    from harness.accounting import plan_model
    from harness.config_schema import from_dict
    from harness.model.config import ModelConfig

    model = yaml.safe_load((legacy / "config.yaml").read_text())["model"]
    assert run.params_total == plan_model(from_dict(ModelConfig, model)).params_total
    steps = load_frames([run]).steps
    assert steps.loc[steps["step"] == 10, "val_loss"].item() == 5.0  # from the older `eval` event


def test_frames_are_tidy(frames, sweep_root):
    steps = frames.steps
    attn = steps[(steps["arm"] == "attention") & (steps["seed"] == 0)]
    assert len(attn) == 10 and attn.loc[attn["step"] == 10, "val_loss"].item() == 6.2
    assert attn["val_loss"].notna().sum() == 2  # merged into the step rows, not extra rows
    ev = frames.evals
    hs = ev[
        (ev["arm"] == "1:3") & (ev["seed"] == 1) & (ev["task"] == "hellaswag") & (ev["suite"] == "ablation")
    ]
    assert hs[["value", "stderr", "n", "shots", "step"]].values.tolist() == [[0.42, 0.01, 1000, 10, 10]]
    tqa = ev[(ev["task"] == "truthfulqa_mc2")].iloc[0]
    assert tqa["status"] == "unavailable offline" and math.isnan(tqa["value"])
    avg = ev[(ev["suite"] == "ollm") & (ev["task"] == "average")].iloc[0]
    assert avg["note"].startswith("partial")
    imdb = ev[(ev["task"] == "imdb") & (ev["metric"] == "format_adherence")].iloc[0]
    assert imdb["stderr"] == pytest.approx(math.sqrt(92 / 104 * 12 / 104 / 104))  # Agresti-Coull
    assert set(frames.off_format["answer"]) == {"Great", "3/10"}
    assert (frames.events["event"] == "heldout_loss").sum() == 2 * 5 - 0  # 5 finished runs x 2 evaluations
    assert set(frames.runs["state"]) == {"done", "running", "failed"}


def test_adhoc_results_are_ignored(tmp_path):
    path = fx.write_run(tmp_path, "s", "a", evals={"perplexity": fx.perplexity(-1.0, -2.0, -3.0)})
    (path / "evals" / "adhoc").mkdir()
    (path / "evals" / "adhoc" / "perplexity-x.json").write_text(json.dumps(fx.perplexity(9.0, 9.0, 9.0)))
    ev = load_frames(load_runs([path])).evals
    assert ev.loc[ev["metric"] == "logprob_per_byte", "value"].tolist() == [-1.0, -2.0, -3.0]


def test_paper_values_keep_their_provenance():
    paper = load_paper()
    assert paper.table("table4").rows["Attention"]["c4"].value == -0.543
    assert paper.table("table4").rows["Attention"]["c4"].mark == ""
    assert paper.table("table5").rows["Mamba"]["c4"].mark == "†"
    assert paper.table("table5").rows["Mamba"]["ollm"].mark == ""
    t8 = paper.table("table8").rows["Jamba + RoPE"]
    assert (t8["ollm"].provenance, t8["narrativeqa"].provenance) == ("R", "V")
    assert paper.table("table2").rows["Mixtral"]["arc_e"].provenance == "R"
    assert {f.kind for f in paper.figures.values()} >= {"loss_curves", "attention_heads", "icl_imdb"}


def test_table4_cells(frames):
    paper = load_paper()
    m = measure(frames, paper)
    table = paper_table(paper.table("table4"), paper.compare([TABLE4])[0], m, frames.runs, paper)
    md = render.markdown(table)
    cells = md_cells(md)
    # mean ± std over two seeds (std with n - 1), the delta to the baseline, best arm in bold
    assert cells[("Attention (baseline)", "HellaSwag ↑ ours")] == "31.0 ± 1.4"
    assert cells[("Jamba a:m=1:3", "HellaSwag ↑ ours")] == "**41.0 ± 1.4 (+10.0)**"
    assert cells[("Jamba a:m=1:3", "C4 ↑ ours")] == "**-1.510 ± 0.014 (+0.100)**"
    assert cells[("Jamba a:m=1:3", "runs")] == "2 done"
    # the paper's value beside ours, its delta, its own best marked
    assert cells[("Jamba a:m=1:3", "HellaSwag ↑ paper")] == "**65.1 (+2.7)**"
    assert cells[("Attention (baseline)", "HellaSwag ↑ paper")] == "62.4"
    # one seed: a plain value; a failed eval and unfinished runs: "—" with the reason as a footnote
    assert cells[("Jamba a:m=1:7", "C4 ↑ ours")] == "**-1.510 (+0.100)**"  # ties with 1:3: both best
    note_eval = cells[("Jamba a:m=1:7", "HellaSwag ↑ ours")]
    note_mamba = cells[("Mamba", "HellaSwag ↑ ours")]
    assert note_eval.startswith("—") and note_mamba.startswith("—")
    footnotes = {line[0]: line[2:] for line in md.splitlines() if line and line[0] in "¹²³⁴⁵⁶⁷⁸⁹"}
    assert footnotes[note_eval[-1]] == "ablation eval failed: RuntimeError: boom"
    assert footnotes[note_mamba[-1]] == (
        "seed 0: run running (step 5/10); seed 1: run failed: non-finite loss nan at step 3"
    )
    assert cells[("Mamba", "runs")] == "1 running, 1 failed"
    # OLLM is partial offline (TruthfulQA): shown, with the caveat as a footnote
    assert cells[("Attention (baseline)", "OLLM ↑ ours")].startswith("15.5 ± 0.7")
    assert "partial: mean over" in md

    csv = pd.read_csv(__import__("io").StringIO(render.to_csv(table)))
    hs = csv[(csv["row"] == "Jamba a:m=1:3") & (csv["metric"] == "hellaswag")].iloc[0]
    assert hs["ours_n"] == 2 and hs["ours_std"] == pytest.approx(math.sqrt(2) / 1)
    assert hs["ours_best"] and hs["paper"] == 65.1 and hs["paper_provenance"] == "V"
    tex = render.latex(table)
    assert r"\toprule" in tex and r"\textbf{41.0 $\pm$ 1.4 (+10.0)}" in tex and r"\cmidrule(lr){3-4}" in tex
    text = render.text(table)
    assert "41.0 ± 1.4 (+10.0)*" in text


def test_recalled_paper_cells_carry_a_dagger(tmp_path):
    compare = [
        {"table": "table5", "baseline": "attention", "rows": {"attention": "Attention", "1:7": "Jamba 1:7"}}
    ]
    for arm, preset in (("attention", "tiny-attention"), ("1:7", "tiny-1to7")):
        fx.write_run(
            tmp_path,
            "t5",
            arm,
            preset=preset,
            compare=compare,
            evals={"perplexity": fx.perplexity(-1.5, -2.0, -2.2)},
        )
    frames = load_frames(load_runs([tmp_path / "t5"]))
    paper = load_paper()
    table = paper_table(
        paper.table("table5"), paper.compare(compare)[0], measure(frames, paper), frames.runs, paper
    )
    cells = md_cells(render.markdown(table))
    assert cells[("Jamba 1:7", "C4 ↑ paper")] == "**-0.547† (+0.008)**"
    assert "† recalled from the paper" in render.markdown(table)
    assert r"-0.555$^\dagger$" in render.latex(table)
    # a paper row without an arm is kept, with the reason
    assert cells[("Mamba", "C4 ↑ ours")].startswith("—")


def test_summary_and_table1(frames):
    paper = load_paper()
    m = measure(frames, paper)
    summary = summary_table("table4-synth", m, frames.runs, paper, "attention")
    cells = md_cells(render.markdown(summary))
    assert cells[("attention (baseline)", "held-out loss ↓")] == "6.250 ± 0.071"
    assert cells[("1:3", "held-out loss ↓")] == "**5.850 ± 0.071 (-0.400)**"
    assert "paper" not in render.markdown(summary).splitlines()[0]
    t1 = md_cells(render.markdown(table1(frames.runs, paper)))
    assert t1[("Jamba", "total params ours")] == "51.57B"  # human units: a tiny model reads 1.00M
    assert t1[("Jamba", "KV cache @256K ours")] == "4.00 GiB"


def measures_frame(
    values: dict[str, list[tuple[float, float | None]]], metric: str = "hellaswag"
) -> pd.DataFrame:
    """A measures frame: arm -> [(value, stderr), ...] (one tuple per seed)."""
    rows = []
    for arm, runs in values.items():
        for seed, (value, se) in enumerate(runs):
            rows.append(
                {
                    "run_id": f"{arm}{seed}",
                    "sweep": "s",
                    "arm": arm,
                    "label": arm,
                    "seed": seed,
                    "state": "done",
                    "metric": metric,
                    "value": value,
                    "stderr": se,
                    "n": 100,
                    "basis": "eval stderr",
                    "note": "",
                    "source": "",
                    "missing": None,
                }
            )
    return pd.DataFrame(rows)


CMP = Compare("table4", "a", {"a": "Attention", "h": "Jamba a:m=1:7"})


def claim(kind="better", margin=0.0, metric="hellaswag") -> ClaimSpec:
    return ClaimSpec(
        "table4", "hybrid beats attention", "", kind, (metric,), ("Jamba a:m=1:7",), ("Attention",), margin
    )


@pytest.mark.parametrize(
    "values, spec, verdict",
    [
        (
            {"h": [(60, None), (61, None), (60.5, None)], "a": [(50, None), (50.5, None), (49.5, None)]},
            claim(),
            "supported",
        ),
        (
            {"h": [(60, None), (70, None)], "a": [(50, None), (62, None)]},
            claim(),
            "inconclusive",
        ),  # 2 seeds: t(1)
        ({"h": [(60, None)], "a": [(50, None)]}, claim(), "inconclusive"),  # one seed, no stderr
        ({"h": [(60, 1.0)], "a": [(50, 1.0)]}, claim(), "supported"),  # one seed, difference >> stderr
        ({"h": [(50.5, 1.0)], "a": [(50, 1.0)]}, claim(), "inconclusive"),  # difference < stderr
        ({"h": [(40, 1.0)], "a": [(50, 1.0)]}, claim(), "not supported"),
        ({"h": [(60, 1.0)], "a": [(50, 1.0)]}, claim(margin=20), "not supported"),  # "far above" fails
        ({"h": [(50.1, 0.01)], "a": [(50, 0.01)]}, claim("within", 0.5), "supported"),
        ({"h": [(52, 0.01)], "a": [(50, 0.01)]}, claim("within", 0.5), "not supported"),
        ({"h": [(60, 1.0)]}, claim(), "inconclusive"),  # no attention arm: no data
    ],
)
def test_claim_verdicts_are_never_stronger_than_the_data(values, spec, verdict):
    result = check_claim(spec, CMP, measures_frame(values), load_paper())
    assert result.verdict == verdict, [c.effect for c in result.comparisons]


def test_claim_effect_and_lower_is_better():
    m = measures_frame(
        {"h": [(5.0, None), (5.1, None), (5.05, None)], "a": [(6.0, None), (6.1, None), (6.05, None)]},
        metric="heldout_loss",
    )
    result = check_claim(claim(metric="heldout_loss"), CMP, m, load_paper())
    assert result.verdict == "supported"
    (comp,) = result.comparisons
    assert comp.effect.startswith("Δ +1.0000 [95% ") and "seed spread (n=3)" in comp.effect


def test_report_folder_names_failed_and_running_runs(sweep_root, tmp_path, capsys):
    out = tmp_path / "report"
    index = build_report([str(sweep_root / "table4-synth")], out=out, echo=lambda s: None)
    assert index == out / "index.html"
    md = (out / "index.md").read_text()
    assert "run failed: non-finite loss nan at step 3" in md and "run running (step 5/10)" in md
    assert "ablation eval failed: RuntimeError: boom" in md.split("### Table 4")[0]  # in the runs table
    assert "### Table 4: attention:Mamba ratio" in md and "### Table 6" in md
    assert "inconclusive" in md and "Paper: The hybrids' loss is lower throughout training" in md
    page = index.read_text()
    assert page.count("data:image/png;base64,") == len(list((out / "figures").glob("*.png")))
    assert "src='figures/" not in page and "<script" not in page
    for name in ("table4", "table6", "summary", "table1"):
        assert {p.suffix for p in (out / "tables").glob(f"table4-synth-{name}.*")} == {".md", ".csv", ".tex"}
    assert {p.name for p in (out / "data").iterdir()} >= {"runs.csv", "steps.csv", "evals.csv", "claims.csv"}
    ids = {p.stem.removeprefix("table4-synth-") for p in (out / "figures").glob("*.png")}
    assert ids == {"fig5", "table6-companion"}  # no attention/induction results in this sweep
    # re-running replaces the folder as a whole; --format picks table formats
    (out / "stale.txt").write_text("old")
    build_report([str(sweep_root / "table4-synth")], out=out, formats=("md",), echo=lambda s: None)
    assert not (out / "stale.txt").exists() and not list((out / "tables").glob("*.tex"))
    assert not list(tmp_path.glob(".report*"))
    # never into a run directory
    run_dir = next((sweep_root / "table4-synth").iterdir())
    with pytest.raises(ConfigError, match="reports never write into runs"):
        build_report([str(sweep_root / "table4-synth")], out=run_dir / "report", echo=lambda s: None)


def test_cli_errors_are_config_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing.yaml")]) == 2
    assert "sweep file not found" in capsys.readouterr().err
    fx.write_run(tmp_path / "runs", "mysweep", "a", compare=[{"table": "table44", "rows": {}}])
    assert main(["report", str(tmp_path / "runs" / "mysweep"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown paper table 'table44'. Did you mean 'table4'?" in err and "run.json" in err
    assert "Traceback" not in err


def test_sweep_file_compare_and_user_sweep(tmp_path, capsys):
    """A sweep file with `compare:` (tolerated before the schema has it) maps arms to rows; a user's sweep
    without one gets the generic table and Table 1 only."""
    sweep = {
        "name": "mine",
        "base": fx.run_config("x", "tiny-1to7", 0, 10),
        "arms": {"a": {}, "b": {"optim": {"lr": 1e-3}}},
        "compare": [
            {"table": "table8", "baseline": "a", "rows": {"a": "Jamba (no pos.)", "b": "Jamba + RoPE"}}
        ],
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(sweep))
    root = tmp_path / "runs"
    runs = load_runs([path], root=root)
    assert [r.state for r in runs] == ["not launched", "not launched"]
    assert runs[0].compare[0]["table"] == "table8" and runs[0].arm_source == "sweep file"
    assert main(["report", str(path), "--root", str(root), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "Table 8" in out and "run not launched" in out and "index.html" in out

    plain = tmp_path / "plain"
    fx.write_run(plain, "user-sweep", "x", run_json=False, evals={"perplexity": fx.perplexity(-1, -2, -3)})
    index = build_report([str(plain / "user-sweep")], out=tmp_path / "r2", echo=lambda s: None)
    assert sorted(p.name for p in (index.parent / "tables").glob("*.md")) == [
        "user-sweep-summary.md",
        "user-sweep-table1.md",
    ]


def test_legacy_directories_map_to_paper_rows_through_their_slugs(tmp_path):
    """Run directories without run.json, found on their own, know their arms only as slugs ("1to7tomoe" for
    "1:7+moe", as directories were named before run.json): a `compare:` (the project's table7 sweep file's)
    still maps them to the paper's rows."""
    from harness.config_schema import to_dict
    from sweeps.config import load_sweep

    for arm, preset, nq in (("1:7", "tiny-1to7", 0.10), ("1:7+moe", "tiny-1to7-moe", 0.12)):
        fx.write_run(
            tmp_path,
            "table7-tiny",
            arm,
            preset=preset,
            run_json=False,
            evals={"ablation": fx.ablation(0.3, 0.5, nq)},
        )
    paper = load_paper()
    runs = load_runs([tmp_path / "table7-tiny"])
    assert sorted(r.arm for r in runs) == ["1to7", "1to7tomoe"]
    sweep_file = Path(__file__).resolve().parents[1] / "sweeps" / "table7-tiny.yaml"
    (compare,) = paper.compare(to_dict(load_sweep(sweep_file).compare))
    frames = load_frames(runs)
    table = paper_table(paper.table("table7"), compare, measure(frames, paper), frames.runs, paper)
    assert [(r.label, r.arms, r.baseline) for r in table.rows] == [
        ("Jamba (no MoE)", "1to7", True),
        ("Jamba + MoE", "1to7tomoe", False),
    ]
    cell = table.cell("Jamba + MoE", "nq")
    assert cell.delta == pytest.approx(2.0) and cell.paper_delta == pytest.approx(3.5) and cell.best


def test_every_sweep_file_declares_known_paper_tables():
    """The project's sweep files map their arms onto rows of the paper's tables (`compare:`)."""
    from analysis.paper import load_paper
    from harness.config_schema import to_dict
    from sweeps.config import load_sweep

    paper = load_paper()
    for path in sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml")):
        compares = paper.compare(to_dict(load_sweep(path).compare), source=str(path))
        assert all(c.rows for c in compares), path
        if path.name.startswith(("table", "fig")) or path.name == "mini.yaml":  # mini-mqar: no paper table
            assert compares, path


def test_the_sweep_file_given_says_which_tables_run_json_otherwise(tmp_path):
    """A table added to a sweep file after its runs were launched (docs/extending.md, section 4) shows in a
    report of that sweep file; a report of the folder alone uses what run.json recorded at launch."""
    run = fx.write_run(tmp_path / "runs", "mine", "a", compare=[])
    declared = [{"table": "table8", "baseline": "a", "rows": {"a": "Jamba (no pos.)"}}]
    from_file = read_run(RunRef(path=run, sweep_file=str(tmp_path / "mine.yaml"), compare=declared))
    assert from_file.compare == declared and from_file.compare_source == str(tmp_path / "mine.yaml")
    alone = read_run(RunRef(path=run))
    assert alone.compare == [] and alone.compare_source == str(run / "run.json")

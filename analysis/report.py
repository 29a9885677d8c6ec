"""``ablate report``: every table and figure a set of runs supports, written to one report folder.

    <out>/index.md, index.html     the tables, claims and figures with captions and the paper's claims
    <out>/tables/<sweep>-<table>.{md,csv,tex}
    <out>/figures/<sweep>-<figure>.{png,pdf}
    <out>/data/*.csv                the tidy frames (runs, steps, evals, events, ...), measures and claims

Per sweep: each paper table its ``compare:`` names (from the sweep file given, else run.json, else the
registry in paper.yaml) with its claims checked, a generic arms x metrics table, Table 1 from the configs,
and each figure whose data exists (loss curves; attention heads; IMDB companion; induction probe; MQAR;
needle in a haystack and passkey by length x depth; loss by position; expert load).
The folder is written beside ``out`` and swapped in when complete, so a re-run replaces the report as a
whole and an interrupted one leaves the previous report intact. Nothing is ever written into a run dir.
"""

from __future__ import annotations

import datetime
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis import fig_icl, fig_longctx, fig_training, recall, render
from analysis.attention_maps import load_prompt_maps
from analysis.claims import ClaimResult, check_claims
from analysis.frames import Frames, load_frames, write_csvs
from analysis.measure import measure
from analysis.page import FigureOut, Report, SweepReport, TableOut, index_html, index_md
from analysis.paper import Compare, FigureSpec, Paper, load_paper
from analysis.runs import RunInfo, load_runs
from analysis.style import save_figure
from analysis.tables import Table, paper_table, summary_table, table1
from harness.config_errors import ConfigError

FORMATS = ("md", "csv", "tex")
FIGURE_FORMATS = ("png", "pdf")


def compare_entries(sweep: str, runs: list[RunInfo], paper: Paper) -> list[Compare]:
    """The sweep's declared paper tables: the ``compare:`` of the sweep file given to the report, else the
    one run.json recorded at launch; none for a sweep that declares none (the generic arms x metrics
    table)."""
    for run in runs:
        if run.compare is not None:
            return paper.compare(run.compare, source=run.compare_source)
    return []


def display_names(labels: list[str], arms: dict[str, str], compares: list[Compare]) -> dict[str, str]:
    """Arm label -> the paper's row name (first declaring table) or the label itself."""
    names = {}
    for label in labels:
        row = next((r for c in compares if (r := c.row_of(arms[label]))), None)
        names[label] = row if row and row not in names.values() else label
    return names


def _figure_spec(compares: list[Compare], kind: str, paper: Paper) -> FigureSpec | None:
    """The paper's figure of this kind among those the sweep's paper tables name (e.g. Fig. 5 for Table 4),
    else the paper's one figure of a kind no table names (Fig. 4's needle in a haystack: any sweep that
    measures it is set beside it)."""
    for c in compares:
        for fid in paper.table(c.table).figures:
            if paper.figures[fid].kind == kind:
                return paper.figures[fid]
    tabled = {paper.figures[fid].kind for study in paper.tables.values() for fid in study.figures}
    alone = [f for f in paper.figures.values() if f.kind == kind and kind not in tabled]
    return alone[0] if len(alone) == 1 else None


def _hybrids(runs: pd.DataFrame) -> list[str]:
    """Labels of arms with attention and Mamba layers (else: of any arm with attention)."""
    patterns = dict(zip(runs["label"], runs["pattern"].fillna(""), strict=True))
    hybrids = [lab for lab, p in patterns.items() if "*" in p and ("M" in p or "S" in p)]
    return hybrids or [lab for lab, p in patterns.items() if "*" in p]


@dataclass
class Drawn:
    """A figure with its kind (paper.yaml ``figures.*.kind``, which links it to the paper's figure)."""

    kind: str
    title: str
    caption: str
    figure: Figure


def _loss(frames: Frames, measures: pd.DataFrame, names: dict[str, str]) -> list[Drawn]:
    if not frames.steps["loss"].notna().any():
        return []
    spikes = int((frames.events["event"] == "loss_spike").sum())
    caption = (
        "Training loss per arm against training tokens (EMA-smoothed over about a twentieth of each curve, "
        f"weight at most {fig_training.SMOOTHING}; raw in light), held-out loss as open markers"
        + (f", {spikes} loss_spike events from events.jsonl as crosses" if spikes else "; no loss spikes")
        + ". Several seeds: one curve each."
    )
    fig = fig_training.loss_curves(frames.steps, frames.events, names)
    return [Drawn("loss_curves", "Training loss", caption, fig)]


def _attention(frames: Frames, measures: pd.DataFrame, names: dict[str, str]) -> list[Drawn]:
    heads = frames.heads
    if heads.empty:
        return []
    prompts, highlight, shown_runs = {}, {}, []
    for label in _hybrids(frames.runs):
        run = frames.runs[frames.runs["label"] == label].iloc[0]
        mine = heads[heads["run_id"] == run["run_id"]]
        view = load_prompt_maps(run["run_dir"], _imdb_settings(Path(run["run_dir"]))) if len(mine) else None
        if view is not None:
            prompts[label] = view
            shown_runs.append(run["run_id"])
            highlight[label] = [(layer, head) for _, layer, head in fig_icl.top_heads(mine)]
    shown = {label: name for label, name in names.items() if label in prompts}
    to_labels = (
        "Attention from the final ':' of the first few-shot IMDB prompt (evals/attention_maps.npz) to every "
        "earlier token, for the hybrid's four heads with the most attention to the demonstrations' label "
        "tokens (highlighted); titles give each head's mean label mass over the suite's prompts."
    )
    scores = (
        "Per attention layer and head (first seed of each arm): prefix-matching (induction) score on "
        "repeated random tokens, previous-token score, and attention mass from ':' to the label tokens; "
        "outlined: the heads shown in the attention-to-labels view."
    )
    out = [
        Drawn(
            "head_scores",
            "Per-head attention scores",
            scores,
            fig_icl.head_heatmaps(heads, frames.runs, names, highlight),
        )
    ]
    if prompts:  # the maps need the imdb pack; without it the scores above still stand
        out.insert(
            0,
            Drawn(
                "attention_heads",
                "Attention to labels",
                to_labels,
                fig_icl.attention_to_labels(prompts, heads[heads["run_id"].isin(shown_runs)], shown),
            ),
        )
    return out


def _imdb(frames: Frames, measures: pd.DataFrame, names: dict[str, str]) -> list[Drawn]:
    if (
        not measures.loc[measures["metric"].isin(["imdb", "imdb_format", "imdb_loglik"]), "missing"]
        .isna()
        .any()
    ):
        return []
    caption = (
        "IMDB few-shot (icl suite): log-likelihood accuracy (label preference, format-free), format "
        "adherence (greedy answer starts with a label word) and generation accuracy (off-format = wrong, the "
        "paper's scoring); bars: mean over seeds, error bars: seed std or binomial s.e.; below: the most "
        "frequent off-format answers."
    )
    return [
        Drawn("icl_imdb", "IMDB scores", caption, fig_icl.imdb_companion(measures, frames.off_format, names))
    ]


def _induction(frames: Frames, measures: pd.DataFrame, names: dict[str, str]) -> list[Drawn]:
    if frames.induction_curve.empty:
        return []
    caption = (
        "Induction probe (induction suite): loss per position on EOS + random tokens + the same tokens "
        "again, mean over sequences and seeds; a model that copies from context drops after the repeat "
        "starts."
    )
    fig = fig_icl.induction_curve(frames.induction_curve, names)
    return [Drawn("induction_curve", "Induction probe", caption, fig)]


def _mqar(frames: Frames, measures: pd.DataFrame, names: dict[str, str]) -> list[Drawn]:
    if not (frames.evals["suite"] == "mqar").any():
        return []
    caption = (
        "Runs trained on multi-query associative recall (mqar suite, held-out test stream): accuracy of the "
        "argmax over the whole vocabulary at each query, per (sequence length, key-value pairs) task; mean "
        "over seeds, error bars: seed std or binomial s.e. Published small models (Zoology) solve it with "
        "attention and hybrids, while pure Mamba degrades as the pairs grow."
    )
    return [Drawn("mqar_recall", "MQAR recall", caption, fig_icl.mqar_recall(frames.evals, names))]


def _expert_load(frames: Frames, measures: pd.DataFrame, names: dict[str, str]) -> list[Drawn]:
    if frames.expert_load.empty:
        return []
    caption = "Share of routed tokens per expert over training, per MoE layer (first seed of each MoE arm)."
    return [Drawn("expert_load", "Expert load", caption, fig_training.expert_load(frames.expert_load, names))]


def _retrieval(frames: Frames, measures: pd.DataFrame, names: dict[str, str]) -> list[Drawn]:
    drawn = []
    for suite, what in (
        ("niah", "a magic number for a key (RULER's niah_single)"),
        ("passkey", "a pass key"),
    ):
        if not (frames.evals["suite"] == suite).any():
            continue
        caption = (
            f"{suite} suite: share of prompts whose greedy continuation contains {what} hidden at a depth "
            "of the haystack (rows) in a prompt of a length (columns); mean over seeds. The black line marks "
            "the training length: columns right of it test retrieval past it."
        )
        drawn.append(
            Drawn(
                suite,
                f"{suite}: length x depth",
                caption,
                fig_longctx.retrieval_heatmaps(frames.evals, names, suite),
            )
        )
    return drawn


def _position_loss(frames: Frames, measures: pd.DataFrame, names: dict[str, str]) -> list[Drawn]:
    if not (frames.evals["suite"] == "position_loss").any():
        return []
    caption = (
        "position_loss suite: per-token loss by position on long held-out documents, averaged in log-spaced "
        "bins, mean over seeds; dashed: the training length. A curve that turns up past it does not "
        "extrapolate."
    )
    fig = fig_longctx.position_loss_curves(frames.evals, names)
    return [Drawn("position_loss", "Loss by position", caption, fig)]


FIGURES = (_loss, _attention, _imdb, _induction, _mqar, _retrieval, _position_loss, _expert_load)


def _imdb_settings(run_dir: Path) -> dict:
    """The IMDB prompt format the attention suite used (template, delimiter, labels)."""
    try:
        payload = json.loads((run_dir / "evals" / "attention.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return (payload.get("settings") or {}).get("imdb") or {}


def _subset(frames: Frames, run_ids: set[str]) -> Frames:
    return Frames(**{name: frame[frame["run_id"].isin(run_ids)] for name, frame in frames.items()})


def _check_out(out: Path, runs: list[RunInfo]) -> None:
    target = out.resolve()
    for run in runs:
        root = run.path.resolve()
        if target == root or root in target.parents:
            raise ConfigError(
                f"the report folder {out} is inside run directory {run.path}; reports never write into runs: "
                "choose another --out (default: reports/<sweep>)"
            )


def default_out(runs: list[RunInfo]) -> Path:
    return Path("reports") / "+".join(dict.fromkeys(r.sweep for r in runs))


def _title(runs: list[RunInfo]) -> str:
    """The sweeps' names; runs of ``ablate train`` (no sweep: their folder stands in) by their own names."""
    names = []
    for r in runs:
        name = r.name if r.created_by == "ablate train" and r.name else r.sweep
        if name not in names:
            names.append(name)
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def build_report(
    sources: list[str],
    out: str | Path | None = None,
    root: str | Path = "runs",
    formats: tuple[str, ...] = FORMATS,
    echo: Callable[[str], None] = print,
) -> Path:
    """Write the report of ``sources`` (sweep files, sweep folders, run directories) to ``out`` and return
    its ``index.html``; prints every table and the claims' verdicts through ``echo``."""
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown --format '{fmt}'; choose among {', '.join(FORMATS)}")
    runs, frames, measures, parts = report_parts(sources, root)
    out = Path(out) if out else default_out(runs)
    _check_out(out, runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a report is meant to be shared
    try:
        sweeps = [_sweep_report(p, tmp, formats, echo) for p in parts]
        studies = []
        if recall.write_report(frames, tmp / "recall", runs, echo) is not None:
            studies.append(("Recall study: Zoology's Fig. 2 protocol", "recall/index.md"))
        data = write_csvs(frames, tmp / "data")
        measures.to_csv(tmp / "data" / "measures.csv", index=False)
        claims = [c for s in sweeps for t in s.tables for c in t.claims]
        _claims_frame(claims).to_csv(tmp / "data" / "claims.csv", index=False)
        data_files = [str(p.relative_to(tmp)) for p in data] + ["data/measures.csv", "data/claims.csv"]
        created = datetime.datetime.now().isoformat(timespec="seconds")
        report = Report(out, [str(s) for s in sources], created, sweeps, data_files, studies, _title(runs))
        (tmp / "index.md").write_text(index_md(report))
        (tmp / "index.html").write_text(index_html(report, tmp))
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


@dataclass
class SweepParts:
    """What a report shows of one sweep, before anything is written: its tables (with their claims
    checked) and figures (each with the paper's figure it reproduces, if any). The notebook
    ``notebooks/ablation_results.ipynb`` displays these; :func:`build_report` writes them."""

    name: str
    description: str
    runs: pd.DataFrame
    names: dict[str, str]  # arm label -> display name
    tables: list[TableOut]
    figures: list[tuple[str, Drawn, FigureSpec | None]]  # (figure id, figure, the paper's figure)


def sweep_parts(
    name: str, runs: list[RunInfo], frames: Frames, measures: pd.DataFrame, paper: Paper
) -> SweepParts:
    """The tables and figures of sweep ``name`` (``frames`` and ``measures`` of its runs only)."""
    compares = compare_entries(name, runs, paper)
    labels = list(dict.fromkeys(frames.runs["label"]))
    arms = dict(zip(frames.runs["label"], frames.runs["arm"], strict=True))
    names = display_names(labels, arms, compares)
    description = runs[0].sweep_description
    what = f"our runs of sweep {name}" + (f" ({description})" if description else "")
    tables = []
    for c in compares:
        study = paper.table(c.table)
        table = paper_table(study, c, measures, frames.runs, paper)
        caption = f"Ours: {what}; each cell beside the paper's value."
        tables.append(TableOut(table, caption, check_claims(c, measures, paper)))
    baseline = compares[0].baseline if compares else None
    summary = summary_table(name, measures, frames.runs, paper, baseline)
    caption = f"Every measured metric of {what} (no paper counterpart: held-out and training loss, probes)."
    tables.append(TableOut(summary, caption))
    caption = "Parameters and KV cache at 256K tokens from configs: the paper's four models, then our arms."
    tables.append(TableOut(table1(frames.runs, paper), caption))
    figures = []
    for drawn in (d for build in FIGURES for d in build(frames, measures, names)):
        spec = _figure_spec(compares, drawn.kind, paper)
        figures.append((spec.id if spec else drawn.kind.replace("_", "-"), drawn, spec))
    return SweepParts(name, description, frames.runs, names, tables, figures)


def report_parts(
    sources: list[str | Path], root: str | Path = "runs"
) -> tuple[list[RunInfo], Frames, pd.DataFrame, list[SweepParts]]:
    """The runs of ``sources``, their frames and measures, and each sweep's tables and figures."""
    paper = load_paper()
    runs = load_runs(sources, root)
    if not runs:
        raise ConfigError(f"no runs found in {', '.join(map(str, sources))}")
    frames = load_frames(runs)
    measures = measure(frames, paper)
    parts = []
    for name in dict.fromkeys(r.sweep for r in runs):
        sweep_runs = [r for r in runs if r.sweep == name]
        ids = {r.run_id for r in sweep_runs}
        sub, sub_measures = _subset(frames, ids), measures[measures["run_id"].isin(ids)]
        parts.append(sweep_parts(name, sweep_runs, sub, sub_measures, paper))
    return runs, frames, measures, parts


def _sweep_report(
    parts: SweepParts, folder: Path, formats: tuple[str, ...], echo: Callable[[str], None]
) -> SweepReport:
    report = SweepReport(parts.name, parts.description, parts.runs, tables=parts.tables)
    for out in report.tables:
        out.files = _write_table(out.table, folder / "tables", formats)
        echo(render.text(out.table))
        for claim in out.claims:
            echo(render.wrapped(f"  claim [{claim.verdict}] {claim.text} ({claim.summary})"))
        echo("")
    for fid, drawn, spec in parts.figures:
        files = []
        for fmt in FIGURE_FORMATS:
            path = folder / "figures" / f"{parts.name}-{fid}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_figure(drawn.figure, path)
            files.append(str(path.relative_to(folder)))
        title, claim = (spec.title, spec.claim) if spec else (drawn.title, "")
        report.figures.append(FigureOut(fid, title, drawn.caption, claim, files))
    return report


def _write_table(table: Table, folder: Path, formats: tuple[str, ...]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for fmt in formats:
        path = folder / f"{table.sweep}-{table.id}.{fmt}"
        path.write_text(render.FORMATS[fmt](table))
        files.append(f"tables/{path.name}")
    return files


def _claims_frame(claims: list[ClaimResult]) -> pd.DataFrame:
    rows = []
    for c in claims:
        for comp in c.comparisons:
            rows.append(
                {
                    "sweep": c.sweep,
                    "table": c.spec.table,
                    "claim": c.text,
                    "verdict": c.verdict,
                    "metric": comp.metric,
                    "rows": comp.rows,
                    "comparison_verdict": comp.verdict,
                    "effect": comp.effect,
                }
            )
    return pd.DataFrame(
        rows, columns=["sweep", "table", "claim", "verdict", "metric", "rows", "comparison_verdict", "effect"]
    )


def _swap(tmp: Path, out: Path) -> None:
    """Replace ``out`` by the finished ``tmp``: the old report is moved aside first and deleted last."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{tmp.name[-8:]}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

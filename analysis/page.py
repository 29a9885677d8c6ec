"""The report's two pages: ``index.md`` (figures linked) and a self-contained ``index.html`` (figures
embedded as data URIs, inline CSS, no scripts), built from the same :class:`analysis.report.Report`.

Order per sweep: its runs (state, progress, results, problems: a failed or still-running run is named, not
hidden), each table with its caption and the paper's claims with their verdicts, then each figure with its
caption and the paper's claim.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import render
from analysis.claims import ClaimResult
from analysis.measure import run_state_reason
from analysis.paper import DAGGER, load_paper
from analysis.tables import Table


@dataclass
class TableOut:
    table: Table
    caption: str
    claims: list[ClaimResult] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


@dataclass
class FigureOut:
    id: str
    title: str
    caption: str
    paper_claim: str
    files: list[str] = field(default_factory=list)

    @property
    def png(self) -> str:
        return next(f for f in self.files if f.endswith(".png"))


@dataclass
class SweepReport:
    name: str
    description: str
    runs: pd.DataFrame
    tables: list[TableOut] = field(default_factory=list)
    figures: list[FigureOut] = field(default_factory=list)


@dataclass
class Report:
    out: Path
    sources: list[str]
    created: str
    sweeps: list[SweepReport]
    data_files: list[str]
    studies: list[tuple[str, str]] = field(default_factory=list)  # (title, page): e.g. the recall study
    title: str = ""  # what the report is of: its sweeps, or the runs of `ablate train` by name

    @property
    def heading(self) -> str:
        return f"Report: {self.title or ', '.join(s.name for s in self.sweeps)}"


VERDICT_MARK = {
    "supported": "✔ supported",
    "not supported": "✘ not supported",
    "inconclusive": "? inconclusive",
}


def _run_rows(runs: pd.DataFrame) -> list[list[str]]:
    rows = []
    for r in runs.itertuples():
        total = f"/{int(r.total_steps)}" if pd.notna(r.total_steps) else ""
        params = f"{r.params_total / 1e6:.2f}M" if pd.notna(r.params_total) else "—"
        problem = run_state_reason(pd.Series(r._asdict())) or ""
        if r.eval_errors:
            failed = "; ".join(f"{suite} eval failed: {e}" for suite, e in json.loads(r.eval_errors).items())
            problem = "; ".join(p for p in (problem, failed) if p)
        rows.append(
            [
                r.label,
                str(r.seed),
                r.run_id,
                r.state,
                f"{int(r.step)}{total}",
                f"{int(r.tokens):,}",
                params,
                r.evals or "—",
                problem or "—",
            ]
        )
    return rows


RUN_HEAD = ["arm", "seed", "run id", "state", "step", "tokens", "params", "results", "problems"]


def _claim_lines(claims: list[ClaimResult]) -> list[tuple[str, str, str, list[str]]]:
    return [
        (c.verdict, c.text, f"{c.summary}; paper: {c.spec.basis}", _comparison_lines(c.comparisons))
        for c in claims
    ]


def _comparison_lines(comparisons) -> list[str]:
    """One line per comparison with data; those without are one line in all, naming their metrics and the
    reasons (28 lines of "no data: suite ollm not in the run's evals" say one thing)."""
    lines = [f"{x.metric}, {x.rows}: {x.verdict}; {x.effect}" for x in comparisons if not _no_data(x)]
    missing = [x for x in comparisons if _no_data(x)]
    if missing:
        metrics = ", ".join(dict.fromkeys(x.metric for x in missing))
        reasons = "; ".join(
            dict.fromkeys(x.effect.removeprefix("no data: ").split(": ", 1)[-1] for x in missing)
        )
        lines.append(
            f"{len(missing)} comparison{'' if len(missing) == 1 else 's'} without data ({metrics}): {reasons}"
        )
    return lines


def _no_data(comparison) -> bool:
    return comparison.effect.startswith("no data")


def _state_summary(runs: pd.DataFrame) -> str:
    counts = runs["state"].value_counts()
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def index_md(report: Report) -> str:
    paper = load_paper()
    out = [f"# {report.heading}", ""]
    out.append(
        f"Generated {report.created} by `ablate report {' '.join(report.sources)}`. Paper: Jamba "
        f"(arXiv 2403.19887); {DAGGER} marks a paper value recalled, not confirmed ({paper.provenance['R']})."
    )
    out.append("")
    for title, page in report.studies:
        out += [f"## {title}", "", f"Across the sweeps above: [{page}]({page}).", ""]
    for s in report.sweeps:
        out += _sweep_md(s)
    out += [
        "## Data",
        "",
        "Tidy frames of every run, as CSV: " + ", ".join(f"[{Path(f).name}]({f})" for f in report.data_files),
        "",
    ]
    return "\n".join(out)


def _sweep_md(s: SweepReport) -> list[str]:
    out = [f"## Sweep {s.name}", ""]
    if s.description:
        out += [s.description, ""]
    out += [f"### Runs ({_state_summary(s.runs)})", ""]
    out += ["| " + " | ".join(RUN_HEAD) + " |", "|" + "---|" * len(RUN_HEAD)]
    out += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in _run_rows(s.runs)]
    out.append("")
    for t in s.tables:
        out += [f"### {t.table.title}", "", t.caption, "", render.markdown(t.table)]
        out.append("Files: " + ", ".join(f"[{Path(f).suffix[1:]}]({f})" for f in t.files))
        out.append("")
        if t.claims:
            out += ["Paper's claims, checked:", ""]
            for verdict, text, summary, details in _claim_lines(t.claims):
                out.append(f"- **{VERDICT_MARK[verdict]}**: {text} ({summary})")
                out += [f"  - {d}" for d in details]
            out.append("")
    for f in s.figures:
        out += [f"### {f.title}", "", f"![{f.title}]({f.png})", "", f.caption]
        if f.paper_claim:
            out += ["", f"Paper: {f.paper_claim}"]
        out += ["", "Files: " + ", ".join(f"[{Path(x).suffix[1:]}]({x})" for x in f.files), ""]
    return out


CSS = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1440px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 12px; margin: .6em 0; }
.scroll { overflow-x: auto; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #555; }
td.paper, th.paper { color: #555; background: #f6f6f6; }
tr.baseline td:first-child { font-style: italic; }
.legend, .caption { font-size: 12px; color: #444; } td small { color: #666; }
.claim-paper { font-size: 12px; color: #444; font-style: italic; }
.verdict { font-weight: bold; padding: 0 4px; border-radius: 3px; }
.supported { background: #d8efd8; } .not-supported { background: #f5d5d5; }
.inconclusive { background: #eee; } .runs td { text-align: left; }
figure { margin: 1em 0; } figure img { width: 100%; max-width: 1000px; border: 1px solid #eee; }
details { font-size: 12px; color: #333; }
"""


def _img(folder: Path, rel: str) -> str:
    data = base64.b64encode((folder / rel).read_bytes()).decode()
    return f"data:image/png;base64,{data}"


def runs_html(runs: pd.DataFrame) -> str:
    """The runs table: arm, seed, run id, state, progress, results and problems of each run."""
    e = html.escape
    parts = ["<div class=scroll><table class=runs><thead><tr>"]
    parts.append("".join(f"<th>{h}</th>" for h in RUN_HEAD) + "</tr></thead><tbody>")
    for row in _run_rows(runs):
        parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def table_html(t: TableOut) -> str:
    """One table with its title, caption and the paper's claims with their verdicts."""
    e = html.escape
    parts = [f"<h3>{e(t.table.title)}</h3><p class=caption>{e(t.caption)}</p>"]
    parts.append(f"<div class=scroll>{render.html(t.table)}</div>")
    if t.claims:
        parts.append("<p><b>Paper's claims, checked</b></p><ul>")
        for verdict, text, summary, details in _claim_lines(t.claims):
            cls = verdict.replace(" ", "-")
            items = "".join(f"<li>{e(d)}</li>" for d in details)
            parts.append(
                f"<li><span class='verdict {cls}'>{e(VERDICT_MARK[verdict])}</span> {e(text)} "
                f"<span class=claim-paper>({e(summary)})</span>"
                f"<details><summary>comparisons</summary><ul>{items}</ul></details></li>"
            )
        parts.append("</ul>")
    return "".join(parts)


def index_html(report: Report, folder: Path) -> str:
    """The self-contained page; ``folder`` is where the report's files are (to embed the PNGs)."""
    e = html.escape
    title = report.heading
    head = f"<meta charset=utf-8><title>{e(title)}</title><style>{CSS}</style>"
    command = f"<code>ablate report {e(' '.join(report.sources))}</code>"
    parts = [
        f"<!doctype html><html><head>{head}</head><body><h1>{e(title)}</h1>",
        f"<p class=caption>Generated {e(report.created)} by {command}. Paper: Jamba (arXiv 2403.19887); "
        f"{DAGGER} marks a value recalled from the paper, not confirmed.</p>",
    ]
    for title, page in report.studies:
        figures = sorted((folder / Path(page).parent / "figures").glob("*.png"))
        images = "".join(
            f"<figure><img alt='{e(p.stem)}' src='{_img(folder, str(p.relative_to(folder)))}'></figure>"
            for p in figures
        )
        parts.append(
            f"<h2>{e(title)}</h2><p>Tables and verdicts: <a href='{e(page)}'>{e(page)}</a></p>{images}"
        )
    for s in report.sweeps:
        parts.append(f"<h2>Sweep {e(s.name)}</h2>" + (f"<p>{e(s.description)}</p>" if s.description else ""))
        parts.append(f"<h3>Runs ({e(_state_summary(s.runs))})</h3>{runs_html(s.runs)}")
        parts += [table_html(t) for t in s.tables]
        for f in s.figures:
            claim = f"<p class=claim-paper>Paper: {e(f.paper_claim)}</p>" if f.paper_claim else ""
            parts.append(
                f"<h3>{e(f.title)}</h3><figure><img alt='{e(f.title)}' src='{_img(folder, f.png)}'>"
                f"<figcaption class=caption>{e(f.caption)}</figcaption></figure>{claim}"
            )
    parts.append(
        "<h2>Data</h2><p class=caption>Tidy frames as CSV in <code>data/</code>: "
        + ", ".join(e(Path(f).name) for f in report.data_files)
        + "</p></body></html>"
    )
    return "\n".join(parts)

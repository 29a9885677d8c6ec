"""A :class:`analysis.tables.Table` as Markdown, CSV (one row per cell), LaTeX (booktabs) or terminal text.

Every format shows the same facts: per metric our value (mean +- std over seeds when n >= 2, delta to the
baseline arm in parentheses) beside the paper's (with its delta; recalled cells carry a dagger), the
direction of the metric, the best arm per column in bold (ours and the paper's marked separately), and
"—" with a numbered footnote that says why a value is missing.
"""

from __future__ import annotations

import csv
import io
import textwrap

from analysis.paper import DAGGER, Metric
from analysis.tables import Cell, Table

SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


class Footnotes:
    """Numbered, de-duplicated reasons for missing cells."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> int:
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


def ours_value(cell: Cell, m: Metric) -> str:
    """Our value ("mean ± std" over several seeds) or "—"."""
    if cell.ours is None:
        return "—"
    text = m.fmt(cell.ours.mean)
    if cell.ours.n >= 2 and cell.ours.std is not None:
        text += f" ± {cell.ours.std:.{m.digits}f}"
    return text


def paper_value(cell: Cell, m: Metric) -> str:
    return "—" if cell.paper is None else m.fmt(cell.paper.value) + cell.paper.mark


def _with_delta(value: str, delta: float | None, m: Metric) -> str:
    return value if delta is None else f"{value} ({_signed(delta, m.digits)})"


def ours_parts(cell: Cell, m: Metric) -> tuple[str, str | None]:
    """(text with the delta, footnote) of our side of a cell, without emphasis."""
    note = cell.missing if cell.ours is None else cell.note
    return _with_delta(ours_value(cell, m), cell.delta, m), note or None


def paper_text(cell: Cell, m: Metric) -> str:
    return _with_delta(paper_value(cell, m), cell.paper_delta, m)


def legend(table: Table) -> list[str]:
    """The lines under a table that say how to read it."""
    lines = []
    if any(m.better for m in table.columns):
        lines.append("↑ higher is better, ↓ lower is better; **bold**: the best arm of the column")
        if table.paper_columns:
            lines[0] += " (ours and the paper's marked separately)"
    if table.baseline:
        lines.append(f"(±x): difference to the baseline row, {table.baseline}")
    if any(c.ours and c.ours.n > 1 for c in table.cells.values()):
        lines.append("mean ± std over seeds where an arm has several runs")
    if table.paper_columns and any(c.paper and c.paper.mark for c in table.cells.values()):
        lines.append(f"{DAGGER} recalled from the paper, not confirmed against the PDF")
    units = [f"{m.label}: {m.unit}" for m in table.columns if m.unit and m.human is None]
    if units:
        lines.append("units: " + ", ".join(units))
    return lines


def _header(m: Metric) -> str:
    return f"{m.label} {m.arrow}".strip()


def _show_arm(table: Table) -> bool:
    return any(r.arms and r.arms != r.label for r in table.rows)


def markdown(table: Table) -> str:
    notes = Footnotes()
    head = ["model"] + (["arm"] if _show_arm(table) else []) + [table.runs_header]
    for m in table.columns:
        head += [f"{_header(m)} ours", "paper"] if table.paper_columns else [_header(m)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in table.rows:
        label = f"{r.label} (baseline)" if r.baseline else r.label
        cells = [label] + ([r.arms or "—"] if _show_arm(table) else []) + [r.runs]
        for m in table.columns:
            c = table.cell(r.label, m.id)
            text, note = ours_parts(c, m)
            text = f"**{text}**" if c.best else text
            if note:
                text += str(notes.mark(note)).translate(SUPERSCRIPT)
            cells.append(text)
            if table.paper_columns:
                ptext = paper_text(c, m)
                cells.append(f"**{ptext}**" if c.paper_best else ptext)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"{line}." for line in legend(table)]
    lines += [f"{str(i).translate(SUPERSCRIPT)} {text}" for i, text in enumerate(notes.texts, 1)]
    return "\n".join(lines) + "\n"


TERMINAL_COLUMNS = 120  # a wide table is printed in blocks of metric columns, each repeating the rows


def _column_groups(widths: list[int], fixed: int, per_metric: int, limit: int) -> list[list[int]]:
    """The metric columns (after the ``fixed`` first ones, ``per_metric`` columns each) in blocks that fit
    ``limit`` characters beside the fixed columns (a metric wider than that alone gets a block anyway)."""
    base = sum(widths[:fixed]) + 2 * fixed
    groups: list[list[int]] = []
    current: list[int] = []
    width = base
    for start in range(fixed, len(widths), per_metric):
        cols = list(range(start, start + per_metric))
        extra = sum(widths[c] + 2 for c in cols)
        if current and width + extra - 2 > limit:
            groups.append(current)
            current, width = [], base
        current += cols
        width += extra
    return [*groups, current] if current or not groups else groups


def text(table: Table) -> str:
    """Aligned plain text for the terminal (best cells end with '*')."""
    notes = Footnotes()
    head = ["model", table.runs_header]
    for m in table.columns:
        head += [_header(m), "paper"] if table.paper_columns else [_header(m)]
    body = []
    for r in table.rows:
        cells = [r.label + (" (baseline)" if r.baseline else ""), r.runs]
        for m in table.columns:
            c = table.cell(r.label, m.id)
            t, note = ours_parts(c, m)
            t += "*" if c.best else ""
            t += f"[{notes.mark(note)}]" if note else ""
            cells.append(t)
            if table.paper_columns:
                cells.append(paper_text(c, m) + ("*" if c.paper_best else ""))
        body.append(cells)
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    out = [f"{table.title}  [{table.sweep}]"]
    per_metric = 2 if table.paper_columns else 1
    for group in _column_groups(widths, fixed=2, per_metric=per_metric, limit=TERMINAL_COLUMNS):
        columns = [0, 1, *group]
        if len(out) > 1:
            out.append("")
        for row in [head, *body]:
            out.append("  ".join(row[i].ljust(widths[i]) for i in columns).rstrip())
            if row is head:
                out.append("-" * len(out[-1]))
    out += [wrapped("  " + line.replace("**bold**", "*"), "    ") for line in legend(table)]
    out += [wrapped(f"  [{i}] {t}", "      ") for i, t in enumerate(notes.texts, 1)]
    return "\n".join(out) + "\n"


def wrapped(line: str, indent: str = "    ") -> str:
    """``line`` folded at :data:`TERMINAL_COLUMNS`, its continuation lines indented."""
    return textwrap.fill(line, TERMINAL_COLUMNS, subsequent_indent=indent, break_on_hyphens=False)


def to_csv(table: Table) -> str:
    """One row per (row, metric) cell with every number unformatted."""
    buf = io.StringIO()
    fields = [
        "table",
        "sweep",
        "row",
        "arm",
        "runs",
        "baseline",
        "metric",
        "label",
        "better",
        "unit",
        "ours_mean",
        "ours_std",
        "ours_n",
        "ours_se",
        "ours_basis",
        "ours_delta",
        "ours_best",
        "ours_missing",
        "ours_note",
        "paper",
        "paper_provenance",
        "paper_delta",
        "paper_best",
        "paper_missing",
    ]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for r in table.rows:
        for m in table.columns:
            c = table.cell(r.label, m.id)
            o = c.ours
            writer.writerow(
                {
                    "table": table.id,
                    "sweep": table.sweep,
                    "row": r.label,
                    "arm": r.arms,
                    "runs": r.runs,
                    "baseline": r.baseline,
                    "metric": m.id,
                    "label": m.label,
                    "better": m.better or "",
                    "unit": m.unit,
                    "ours_mean": o.mean if o else "",
                    "ours_std": (o.std if o else "") or "",
                    "ours_n": o.n if o else 0,
                    "ours_se": (o.se if o else "") or "",
                    "ours_basis": o.basis if o else "",
                    "ours_delta": "" if c.delta is None else c.delta,
                    "ours_best": c.best,
                    "ours_missing": c.missing or "",
                    "ours_note": c.note,
                    "paper": c.paper.value if c.paper else "",
                    "paper_provenance": c.paper.provenance if c.paper else "",
                    "paper_delta": "" if c.paper_delta is None else c.paper_delta,
                    "paper_best": c.paper_best,
                    "paper_missing": c.paper_missing,
                }
            )
    return buf.getvalue()


LATEX_ESCAPES = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
    "\\": r"\textbackslash{}",
}


def _tex(s: str) -> str:
    out = "".join(LATEX_ESCAPES.get(ch, ch) for ch in s)
    return (
        out.replace("±", r"$\pm$")
        .replace(DAGGER, r"$^\dagger$")
        .replace("—", "---")
        .replace("↑", r"$\uparrow$")
        .replace("↓", r"$\downarrow$")
    )


def latex(table: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); footnotes and legend follow as a small paragraph."""
    notes = Footnotes()
    per = 2 if table.paper_columns else 1
    spec = "ll" + " ".join(["r" * per] * len(table.columns))
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{_tex(table.title)}}}",
        rf"\label{{tab:{_tex(table.id)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    if table.paper_columns:
        groups = [rf"\multicolumn{{2}}{{c}}{{{_tex(_header(m))}}}" for m in table.columns]
        lines.append(" & & " + " & ".join(groups) + r" \\")
        lines.append(
            " ".join(rf"\cmidrule(lr){{{3 + 2 * i}-{4 + 2 * i}}}" for i in range(len(table.columns)))
        )
        lines.append("Model & Runs & " + " & ".join(["ours & paper"] * len(table.columns)) + r" \\")
    else:
        lines.append("Model & Runs & " + " & ".join(_tex(_header(m)) for m in table.columns) + r" \\")
    lines.append(r"\midrule")
    for r in table.rows:
        cells = [_tex(r.label + (" (baseline)" if r.baseline else "")), _tex(r.runs)]
        for m in table.columns:
            c = table.cell(r.label, m.id)
            t, note = ours_parts(c, m)
            t = rf"\textbf{{{_tex(t)}}}" if c.best else _tex(t)
            t += rf"\textsuperscript{{{notes.mark(note)}}}" if note else ""
            cells.append(t)
            if table.paper_columns:
                p = _tex(paper_text(c, m))
                cells.append(rf"\textbf{{{p}}}" if c.paper_best else p)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    foot = [_tex(line.replace("**bold**", "bold")) for line in legend(table)]
    foot += [rf"\textsuperscript{{{i}}}{_tex(t)}" for i, t in enumerate(notes.texts, 1)]
    lines += [r"\par\smallskip{\footnotesize " + ". ".join(foot) + ".}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _html_delta(delta: float | None, m: Metric) -> str:
    return "" if delta is None else f"<br><small>({_signed(delta, m.digits)})</small>"


def html(table: Table) -> str:
    """An HTML table (for index.html): the Markdown table's content, footnotes and legend below it."""
    import html as h

    notes = Footnotes()
    show_arm = _show_arm(table)
    head = "<th>model</th>" + ("<th>arm</th>" if show_arm else "") + f"<th>{h.escape(table.runs_header)}</th>"
    for m in table.columns:
        span = ' colspan="2"' if table.paper_columns else ""
        head += f'<th{span} title="{h.escape(m.description)}">{h.escape(_header(m))}</th>'
    sub = ""
    if table.paper_columns:
        sub = "<tr><th></th>" + ("<th></th>" if show_arm else "") + "<th></th>"
        sub += "<th>ours</th><th class=paper>paper</th>" * len(table.columns) + "</tr>"
    body = []
    for r in table.rows:
        cls = ' class="baseline"' if r.baseline else ""
        cells = [f"<td>{h.escape(r.label)}{' (baseline)' if r.baseline else ''}</td>"]
        cells += [f"<td>{h.escape(r.arms or '—')}</td>"] if show_arm else []
        cells.append(f"<td>{h.escape(r.runs)}</td>")
        for m in table.columns:
            c = table.cell(r.label, m.id)
            _, note = ours_parts(c, m)
            t = h.escape(ours_value(c, m))
            t = f"<b>{t}</b>" if c.best else t
            if note:
                t += f'<sup title="{h.escape(note)}">{notes.mark(note)}</sup>'
            cells.append(f"<td>{t}{_html_delta(c.delta, m)}</td>")
            if table.paper_columns:
                p = h.escape(paper_value(c, m))
                p = f"<b>{p}</b>" if c.paper_best else p
                cells.append(f"<td class=paper>{p}{_html_delta(c.paper_delta, m)}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    foot = [h.escape(line).replace("**bold**", "<b>bold</b>") for line in legend(table)]
    foot += [f"<sup>{i}</sup> {h.escape(t)}" for i, t in enumerate(notes.texts, 1)]
    return (
        f"<table><thead><tr>{head}</tr>{sub}</thead><tbody>{''.join(body)}</tbody></table>"
        f"<p class=legend>{'<br>'.join(foot)}</p>"
    )


FORMATS = {"md": markdown, "csv": to_csv, "tex": latex}

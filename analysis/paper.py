"""The paper's reference values, metrics, claims and figures (``paper.yaml``) as typed objects.

The YAML file is the single place where a number from the paper lives, each cell with its provenance, so a
table can never show a recalled value as if it were verified. This module only parses and validates it,
and checks a sweep's ``compare:`` declarations against it (unknown table, row or baseline is a ConfigError
that names the file, the key and the valid choices).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.config_errors import ConfigError, did_you_mean

PAPER_FILE = Path(__file__).with_name("paper.yaml")
DAGGER = "†"
RECALLED = "R"


@dataclass(frozen=True)
class Metric:
    """One column: where our value comes from and how it compares with the paper's."""

    id: str
    label: str
    eval: tuple[str, ...] = ()  # "suite/task/metric" keys, first available wins
    training: str | None = None  # a metrics.jsonl field
    events: str | None = None  # an events.jsonl kind, counted
    config: str | None = None  # a fact of the run's model (params_total, params_active, kv_cache_256k)
    scale: float = 1.0  # ours x scale = the paper's units
    digits: int = 3
    better: str | None = None  # "higher", "lower" or None (no direction)
    unit: str = ""
    description: str = ""
    # Shown in human units instead (count: 995.7K, 1.20B; bytes: 3.00 MiB): for sizes that span the tiny
    # models to the paper's (0.00100 billion parameters reads badly).
    human: str | None = None

    @property
    def arrow(self) -> str:
        return {"higher": "↑", "lower": "↓"}.get(self.better or "", "")

    def fmt(self, value: float | None) -> str:
        """The value at the metric's digits; values too small for them keep three significant digits."""
        if value is None:
            return "—"
        if self.human is not None:
            from harness.accounting import format_bytes, format_params

            raw = value / self.scale
            return format_params(raw) if self.human == "count" else format_bytes(raw)
        if value and abs(value) < 10**-self.digits:
            return f"{value:#.3g}"
        return f"{value:.{self.digits}f}"


@dataclass(frozen=True)
class PaperValue:
    value: float
    provenance: str  # "V" or "R"

    @property
    def mark(self) -> str:
        return DAGGER if self.provenance == RECALLED else ""


@dataclass(frozen=True)
class ClaimSpec:
    """A qualitative claim of the paper as a checkable statement (see analysis.claims for the kinds)."""

    table: str
    text: str
    basis: str
    kind: str  # better | within | at_least
    metrics: tuple[str, ...]
    rows: tuple[str, ...]
    than: tuple[str, ...] = ()
    margin: float = 0.0
    threshold: float = 0.0
    provenance: str = "V"


@dataclass(frozen=True)
class FigureSpec:
    id: str
    kind: str
    title: str
    claim: str


@dataclass
class Study:
    """One of the paper's tables (or a figure with a table of checkable numbers)."""

    id: str
    title: str
    columns: list[str]
    rows: dict[str, dict[str, PaperValue]]
    presets: dict[str, str] = field(default_factory=dict)  # Table 1: row -> preset name
    figures: list[str] = field(default_factory=list)
    claims: list[ClaimSpec] = field(default_factory=list)


@dataclass(frozen=True)
class Compare:
    """A sweep's declaration that its arms reproduce rows of a paper table."""

    table: str
    baseline: str | None
    rows: dict[str, str]  # arm (verbatim) -> paper row

    def row_of(self, arm: str) -> str | None:
        """The paper row of ``arm``, also when only its directory-name slug is known ("1to7" for "1:7")."""
        if arm in self.rows:
            return self.rows[arm]
        return next((row for a, row in self.rows.items() if arm in (a, *slugs(a))), None)

    def is_baseline(self, arm: str) -> bool:
        return self.baseline is not None and arm in (self.baseline, *slugs(self.baseline))


def slugs(arm: str) -> tuple[str, str]:
    """An arm name as run directory names spell it: now (sweeps.config.arm_slug), and before run
    directories recorded their arm (every character outside ``[A-Za-z0-9._-]`` became ``to``)."""
    from sweeps.config import arm_slug

    return arm_slug(arm), re.sub(r"[^A-Za-z0-9._-]", "to", arm)


@dataclass
class Paper:
    metrics: dict[str, Metric]
    summary_metrics: list[str]
    tables: dict[str, Study]
    figures: dict[str, FigureSpec]
    provenance: dict[str, str]

    def metric(self, metric_id: str) -> Metric:
        return self.metrics[metric_id]

    def table(self, table_id: str, *, source: str | None = None, key: str | None = None) -> Study:
        if table_id not in self.tables:
            raise ConfigError(
                f"unknown paper table '{table_id}'."
                + did_you_mean(str(table_id), self.tables)
                + f" Tables: {', '.join(self.tables)} (analysis/paper.yaml)",
                source=source,
                key=key,
            )
        return self.tables[table_id]

    def compare(self, entries: Any, *, source: str | None = None) -> list[Compare]:
        """Validated ``compare:`` entries (from run.json or a sweep file)."""
        if entries is None:
            return []
        if not isinstance(entries, list):
            raise ConfigError(
                "compare must be a list of {table, baseline, rows}", source=source, key="compare"
            )
        out = []
        for i, entry in enumerate(entries):
            where = f"compare[{i}]"
            if not isinstance(entry, dict) or "table" not in entry:
                raise ConfigError(
                    "each entry needs 'table' (and 'rows: {arm: paper row}', 'baseline: arm')",
                    source=source,
                    key=where,
                )
            study = self.table(entry["table"], source=source, key=f"{where}.table")
            rows = entry.get("rows") or {}
            if not isinstance(rows, dict):
                raise ConfigError("rows must map arm -> paper row", source=source, key=f"{where}.rows")
            for arm, row in rows.items():
                if row not in study.rows:
                    raise ConfigError(
                        f"arm '{arm}' maps to '{row}', which is not a row of {study.id}."
                        + did_you_mean(str(row), study.rows)
                        + f" Rows: {', '.join(study.rows)}",
                        source=source,
                        key=f"{where}.rows.{arm}",
                    )
            baseline = entry.get("baseline")
            if baseline is not None and baseline not in rows:
                raise ConfigError(
                    f"baseline '{baseline}' is not among the mapped arms ({', '.join(map(str, rows))})",
                    source=source,
                    key=f"{where}.baseline",
                )
            out.append(Compare(study.id, baseline, {str(k): str(v) for k, v in rows.items()}))
        return out


def _paper_value(raw: Any, default: str, where: str) -> PaperValue:
    if isinstance(raw, dict):
        value, provenance = raw["value"], raw.get("provenance", default)
    else:
        value, provenance = raw, default
    if provenance not in ("V", RECALLED):
        raise ConfigError(f"provenance must be V or R, got {provenance!r}", source=PAPER_FILE, key=where)
    return PaperValue(float(value), provenance)


def _study(table_id: str, raw: dict, metrics: dict[str, Metric]) -> Study:
    default = raw.get("provenance", "V")
    rows: dict[str, dict[str, PaperValue]] = {}
    presets: dict[str, str] = {}
    for row, cells in raw["rows"].items():
        cells = dict(cells or {})
        if "preset" in cells:
            presets[row] = cells.pop("preset")
        for col in cells:
            if col not in raw["columns"]:
                raise ConfigError(
                    f"'{col}' is not a column", source=PAPER_FILE, key=f"tables.{table_id}.{row}"
                )
        rows[row] = {
            col: _paper_value(v, default, f"tables.{table_id}.rows.{row}.{col}") for col, v in cells.items()
        }
    for col in raw["columns"]:
        if col not in metrics:
            raise ConfigError(f"unknown metric '{col}'", source=PAPER_FILE, key=f"tables.{table_id}.columns")
    claims = []
    for c in raw.get("claims", []):
        check = c["check"]
        for name in (*check.get("rows", []), *check.get("than", [])):
            if name not in rows:
                raise ConfigError(
                    f"claim row '{name}' is not a row", source=PAPER_FILE, key=f"tables.{table_id}"
                )
        claims.append(
            ClaimSpec(
                table=table_id,
                text=" ".join(c["text"].split()),
                basis=c.get("basis", ""),
                kind=check["kind"],
                metrics=tuple(check["metrics"]),
                rows=tuple(check["rows"]),
                than=tuple(check.get("than", ())),
                margin=float(check.get("margin", 0.0)),
                threshold=float(check.get("threshold", 0.0)),
                provenance=c.get("provenance", "V"),
            )
        )
    return Study(table_id, raw["title"], list(raw["columns"]), rows, presets, raw.get("figures", []), claims)


@functools.lru_cache(maxsize=1)
def load_paper(path: str | Path = PAPER_FILE) -> Paper:
    """Parse and check ``paper.yaml`` (cached: it is read-only data)."""
    raw = yaml.safe_load(Path(path).read_text())
    metrics = {}
    for mid, m in raw["metrics"].items():
        ev = m.get("eval", ())
        metrics[mid] = Metric(
            id=mid,
            label=m["label"],
            eval=tuple([ev] if isinstance(ev, str) else ev),
            training=m.get("training"),
            events=m.get("events"),
            config=m.get("config"),
            scale=float(m.get("scale", 1.0)),
            digits=int(m.get("digits", 3)),
            better=m.get("better"),
            unit=m.get("unit", ""),
            description=" ".join(str(m.get("description", "")).split()),
            human=m.get("human"),
        )
    tables = {tid: _study(tid, t, metrics) for tid, t in raw["tables"].items()}
    figures = {
        fid: FigureSpec(fid, f["kind"], f["title"], " ".join(f["claim"].split()))
        for fid, f in raw["figures"].items()
    }
    paper = Paper(metrics, raw["summary_metrics"], tables, figures, raw["provenance"])
    return paper

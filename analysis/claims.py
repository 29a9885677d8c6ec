"""The paper's qualitative claims checked against a sweep's runs: supported, not supported or inconclusive.

A claim (paper.yaml ``tables.<id>.claims``) is a statement over the rows of a paper table:

* ``better``: every row in ``rows`` beats every row in ``than`` on every metric, by more than ``margin``
  (in the metric's units, direction-aware: lower is better for losses and spike counts);
* ``within``: each pair differs by less than ``margin`` on every metric;
* ``at_least``: each row's value reaches ``threshold`` (direction-aware).

Rows are the paper's; a sweep's ``compare:`` says which arms reproduce them. Each (pair, metric)
comparison uses the 95% interval of the difference (analysis.stats): it *supports* the statement when the
whole interval satisfies it, *contradicts* it when the whole interval violates it, and is *inconclusive*
otherwise, or when there is no interval at all (one run per arm and no standard error): a verdict is never
stronger than the data. The claim is supported when every comparison supports it, not
supported when any contradicts it, and inconclusive otherwise; the effect sizes of all comparisons are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from analysis.measure import arm_estimate
from analysis.paper import DAGGER, ClaimSpec, Compare, Paper
from analysis.stats import Difference, Estimate, difference

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


@dataclass
class Comparison:
    """One (pair of rows or row, metric) test of a claim."""

    metric: str
    rows: str  # e.g. "Jamba a:m=1:3 vs Attention"
    verdict: str
    effect: str  # e.g. "Δ +0.012 [95% +0.004, +0.020] (seed spread (n=2))" or the reason there is none


@dataclass
class ClaimResult:
    spec: ClaimSpec
    sweep: str
    verdict: str
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.spec.text + (DAGGER if self.spec.provenance == "R" else "")

    @property
    def summary(self) -> str:
        counts = {
            v: sum(c.verdict == v for c in self.comparisons) for v in (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)
        }
        return (
            ", ".join(f"{n} {v}" for v, n in counts.items() if n) + f" of {len(self.comparisons)} comparisons"
        )


def _interval_verdict(d: Difference, lo_ok: float, hi_ok: float) -> str:
    """Whether the difference's 95% interval lies inside [lo_ok, hi_ok] (supported), outside (not
    supported) or across a bound, or has no interval (inconclusive)."""
    interval = d.interval
    if interval is None:
        return INCONCLUSIVE
    lo, hi = interval
    if lo > lo_ok and hi < hi_ok:
        return SUPPORTED
    if hi < lo_ok or lo > hi_ok:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def _effect(d: Difference, digits: int) -> str:
    if d.interval is None:
        return f"Δ {d.delta:+.{digits}f}; {d.basis}"
    lo, hi = d.interval
    return f"Δ {d.delta:+.{digits}f} [95% {lo:+.{digits}f}, {hi:+.{digits}f}] ({d.basis})"


def _row_estimates(
    paper_row: str, metric: str, compare: Compare, measures: pd.DataFrame
) -> tuple[list[tuple[str, Estimate]], str | None]:
    """Our estimates for the arms (one per grid point) that reproduce ``paper_row``, or the reason."""
    mine = measures[(measures["metric"] == metric) & (measures["arm"].map(compare.row_of) == paper_row)]
    have, reasons = [], []
    for label, values in mine.groupby("label", sort=False):
        est, missing, _ = arm_estimate(values)
        if est is None:
            reasons.append(missing)
        else:
            have.append((label, est))
    if have:
        return have, None
    return [], f"{paper_row}: {reasons[0] if reasons else 'no arm of the sweep maps to it'}"


def _pair_verdict(spec: ClaimSpec, d: Difference) -> str:
    if spec.kind == "within":
        return _interval_verdict(d, -spec.margin, spec.margin)
    return _interval_verdict(d, spec.margin, math.inf)


def check_claim(spec: ClaimSpec, compare: Compare, measures: pd.DataFrame, paper: Paper) -> ClaimResult:
    """The verdict on one claim, from the measures (analysis.measure) of the arms ``compare`` maps."""
    comparisons = []
    for mid in spec.metrics:
        m = paper.metric(mid)
        sign = -1.0 if m.better == "lower" else 1.0
        digits = m.digits + 1
        for row in spec.rows:
            mine, why = _row_estimates(row, mid, compare, measures)
            if spec.kind == "at_least":
                if why:
                    comparisons.append(Comparison(m.label, row, INCONCLUSIVE, f"no data: {why}"))
                for label, a in mine:
                    d = difference(a, Estimate(spec.threshold, 1, se=0.0), sign)
                    verdict = _interval_verdict(d, 0.0, math.inf)
                    comparisons.append(
                        Comparison(m.label, f"{label} vs {spec.threshold:g}", verdict, _effect(d, digits))
                    )
                continue
            for other in spec.than:
                theirs, why_other = _row_estimates(other, mid, compare, measures)
                if why or why_other:
                    reason = f"no data: {why or why_other}"
                    comparisons.append(Comparison(m.label, f"{row} vs {other}", INCONCLUSIVE, reason))
                    continue
                for a_label, a in mine:
                    for b_label, b in theirs:
                        d = difference(a, b, sign)
                        name = f"{a_label} vs {b_label}"
                        comparisons.append(
                            Comparison(m.label, name, _pair_verdict(spec, d), _effect(d, digits))
                        )
    verdicts = {c.verdict for c in comparisons}
    if NOT_SUPPORTED in verdicts:
        verdict = NOT_SUPPORTED
    elif verdicts == {SUPPORTED}:
        verdict = SUPPORTED
    else:
        verdict = INCONCLUSIVE
    sweep = measures["sweep"].iloc[0] if len(measures) else ""
    return ClaimResult(spec, sweep, verdict, comparisons)


def check_claims(compare: Compare, measures: pd.DataFrame, paper: Paper) -> list[ClaimResult]:
    """Every claim of the paper table that a sweep reproduces (``measures`` of that sweep's runs)."""
    return [check_claim(spec, compare, measures, paper) for spec in paper.table(compare.table).claims]

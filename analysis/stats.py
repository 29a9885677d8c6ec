"""Estimates over seeds and differences between arms, with the uncertainty they honestly have.

An arm's value is the mean over its runs (seeds). Its uncertainty comes from, in order:

* the **seed spread** when it has two or more runs: standard error std/sqrt(n), with n - 1 degrees of
  freedom (so two seeds give a wide Student-t interval, as they should);
* else the run's own **sampling error** (lm-eval's stderr, a binomial one for IMDB proportions, Poisson
  for event counts), a large-sample normal interval;
* else nothing: one run and no standard error, and no verdict can rest on it.

Intervals are two-sided 95%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Two-sided 95% Student-t quantiles by degrees of freedom (1..30); beyond, the normal 1.96.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)  # fmt: skip
Z975 = 1.96


def t_quantile(df: float | None) -> float:
    """The 97.5% quantile for ``df`` degrees of freedom (None: normal)."""
    if df is None or df > len(T975):
        return Z975
    return T975[max(1, math.floor(df)) - 1]


@dataclass
class Estimate:
    """The mean of one arm's runs and its standard error; ``basis`` says where the error comes from."""

    mean: float
    n: int
    std: float | None = None  # over seeds (n >= 2)
    se: float | None = None
    df: float | None = None  # degrees of freedom of ``se`` (None: large-sample)
    basis: str = "one run, no standard error"
    values: list[float] = field(default_factory=list)


def estimate(
    values: list[float], stderrs: list[float | None] | None = None, kind: str = "eval stderr"
) -> Estimate:
    """Mean of ``values`` (one per run) with its standard error (see the module docstring)."""
    n = len(values)
    mean = sum(values) / n
    if n >= 2:
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        return Estimate(mean, n, std, std / math.sqrt(n), n - 1, f"seed spread (n={n})", list(values))
    errors = [e for e in (stderrs or []) if e is not None and math.isfinite(e)]
    if errors:
        return Estimate(mean, 1, None, errors[0], None, kind, list(values))
    return Estimate(mean, 1, values=list(values))


@dataclass
class Difference:
    """``a - b`` (signed so that positive means ``a`` is better) and its 95% interval, when it has one."""

    delta: float
    se: float | None
    df: float | None
    basis: str

    @property
    def half_width(self) -> float | None:
        return None if self.se is None else t_quantile(self.df) * self.se

    @property
    def interval(self) -> tuple[float, float] | None:
        hw = self.half_width
        return None if hw is None else (self.delta - hw, self.delta + hw)


def difference(a: Estimate, b: Estimate, sign: float = 1.0) -> Difference:
    """Welch-style difference of two arm estimates; ``sign`` -1 when lower is better."""
    delta = sign * (a.mean - b.mean)
    if a.se is None or b.se is None:
        return Difference(delta, None, None, "no uncertainty: an arm has one run and no standard error")
    se = math.sqrt(a.se**2 + b.se**2)
    dfs = [e.df for e in (a, b) if e.df is not None]
    df = min(dfs) if dfs else None  # conservative: the smaller seed count decides
    basis = a.basis if a.basis == b.basis else f"{a.basis} / {b.basis}"
    return Difference(delta, se, df, basis)

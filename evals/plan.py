"""An evaluation plan: which suites, with which options, a run is to be evaluated with; and whether the
results in its run directory answer it.

A sweep's ``evals`` and ``eval_options`` resolve to a plan (:func:`resolve_plan`), which the launcher writes
into each run's ``run.json`` before submitting; the job evaluates what that record says, and ``ablate
sweep status`` and relaunches compare the results with the sweep's *current* plan. A result answers its
plan when it was computed on the final checkpoint with the same spec hash (same options, run-time fields
aside); anything else is missing, and :func:`result_status` says why ("options changed: shots 4 -> 8").

Results written before results recorded their spec are compared through the options they did record
(``limit`` and ``options``), with the defaults filled in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evals.suites import resolve_options, spec_hash, spec_record
from harness.config_errors import ConfigError
from harness.config_schema import identity, short_hash


def resolve_plan(
    suites: list[str], options: dict[str, dict[str, Any]] | None = None, source: str | None = None
) -> dict[str, Any]:
    """``{suite: resolved options}`` in the given order; unknown suites or options raise ConfigError."""
    options = options or {}
    for suite in options:
        if suite not in suites:
            raise ConfigError(
                f"options for suite '{suite}', which is not in evals ({', '.join(suites) or 'none'})",
                source=source,
                key=f"eval_options.{suite}",
            )
    return {suite: resolve_options(suite, options.get(suite), source=source) for suite in suites}


def plan_record(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan as run.json holds it: each suite's options and spec hash, and a hash of the whole."""
    suites = {suite: spec_record(suite, options) for suite, options in plan.items()}
    return {"suites": suites, "hash": short_hash({s: r["hash"] for s, r in suites.items()})}


def plan_from_record(record: dict[str, Any] | None) -> dict[str, Any]:
    """The plan a run.json records (``{}`` when it records none, e.g. a run of ``ablate train``)."""
    suites = ((record or {}).get("eval_plan") or {}).get("suites", {})
    return {suite: resolve_options(suite, spec["options"]) for suite, spec in suites.items()}


def result_options(suite: str, result: dict[str, Any]) -> Any | None:
    """The options a stored result ran with (older results: rebuilt from the ``limit`` and ``options`` they
    recorded, defaults filled in); None when they no longer resolve (e.g. an option since removed)."""
    if "spec" in result:
        raw = result["spec"]
    else:
        raw = dict(result.get("options") or {})
        if result.get("limit") is not None:
            raw["limit"] = result["limit"]
    try:
        return resolve_options(suite, raw)
    except ConfigError:
        return None


def read_result(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def result_status(evals_dir: Path, suite: str, options: Any, step: int) -> str | None:
    """None when ``evals/<suite>.json`` answers the planned ``options`` at checkpoint ``step``; else why."""
    result = read_result(evals_dir / f"{suite}.json")
    if result is None:
        return "no result"
    if result.get("step") != step:
        return f"result is for step {result.get('step')}, the final checkpoint is step {step}"
    stored = result_options(suite, result)
    if stored is None:
        return "its options no longer resolve"
    if result.get("spec_hash", spec_hash(suite, stored)) == spec_hash(suite, options):
        return None
    old, new = identity(stored), identity(options)
    changed = [f"{k} {old[k]!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
    return "options changed: " + ", ".join(changed)


def missing_suites(evals_dir: Path, plan: dict[str, Any], step: int) -> dict[str, str]:
    """``{suite: why}`` for every planned suite whose result does not answer the plan."""
    out = {}
    for suite, options in plan.items():
        why = result_status(evals_dir, suite, options, step)
        if why is not None:
            out[suite] = why
    return out

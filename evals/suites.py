"""The evaluation suites by name, and running one on a run directory.

A suite is a function ``run(loaded, *, limit=None, **options) -> dict`` whose payload is JSON-able;
:func:`run_suite` loads the run, calls it, writes ``<run_dir>/evals/<suite>.json`` (provenance, settings,
elapsed time, library versions) and logs an ``eval`` event in the run's ``events.jsonl``. The names are the
ones sweep files use (``harness.sweeps.config.EVAL_SUITES``). Runners are imported only when a suite runs,
so ``ablate eval --suite perplexity`` never imports lm-evaluation-harness.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evals.loading import LoadedRun, load_run
from evals.results import write_result
from harness.config_loader import ConfigError, did_you_mean
from harness.sweeps.config import EVAL_SUITES

# suite name -> ("module:runner", "module:summarizer" or None)
SUITES: dict[str, tuple[str, str | None]] = {
    "perplexity": ("evals.perplexity:run", "evals.perplexity:summarize"),
    "ollm": ("evals.lm_eval_suites:run_ollm", None),
    "ablation": ("evals.lm_eval_suites:run_ablation", None),
    "icl": ("evals.icl:run", "evals.icl:summarize"),
    "induction": ("evals.probes:run", "evals.probes:summarize"),
    "attention": ("evals.attention:run", "evals.attention:summarize"),
}
assert tuple(SUITES) == EVAL_SUITES, "evals.suites.SUITES and harness.sweeps.config.EVAL_SUITES must agree"


def check_suite(suite: str) -> str:
    """``suite`` if it is a known suite name, else a ConfigError naming it, the valid names and a hint."""
    if suite not in SUITES:
        raise ConfigError(
            f"unknown eval suite '{suite}'."
            + did_you_mean(suite, SUITES)
            + f" Suites: {', '.join(SUITES)} (or 'all')"
        )
    return suite


def _resolve(target: str, suite: str) -> Callable:
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"eval suite '{suite}' is unavailable here: cannot import {module_name} ({e})"
        ) from None
    return getattr(module, attr)


def get_runner(suite: str) -> Callable[..., dict]:
    return _resolve(SUITES[check_suite(suite)][0], suite)


def summarize(suite: str, payload: dict) -> list[str]:
    """Short human-readable lines for a suite's payload (its metrics, for suites without a summarizer)."""
    target = SUITES[check_suite(suite)][1]
    if target is not None:
        return _resolve(target, suite)(payload)
    metrics = payload.get("metrics") or {}
    return [f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.items()]


def check_options(suite: str, runner: Callable, options: dict[str, Any]) -> None:
    """Unknown option names fail before any work, with the valid ones and the nearest match."""
    params = inspect.signature(runner).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the runner validates its own pass-through options
    valid = [
        name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "limit"
    ]
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"eval suite '{suite}' has no option '{key}'."
                + did_you_mean(key, valid)
                + f" Options: {', '.join(valid) or 'none'}"
            )


def run_loaded_suite(
    loaded: LoadedRun, suite: str, *, limit: int | None = None, options: dict | None = None
) -> tuple[Path, dict]:
    """Run ``suite`` on an already loaded run, write its result and log the event; returns (path, record).

    ``limit`` may also come as ``options["limit"]`` (a sweep's ``eval_options``); the argument wins."""
    runner = get_runner(suite)
    options = dict(options or {})
    option_limit = options.pop("limit", None)  # sweep files may put it among a suite's eval_options
    limit = limit if limit is not None else option_limit
    check_options(suite, runner, options)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    t0 = time.time()
    payload = runner(loaded, limit=limit, **options)
    elapsed = time.time() - t0
    record = {
        **payload,
        "limit": limit,
        "options": options,
        "device": str(loaded.device),
        "elapsed_s": round(elapsed, 3),
    }
    path = write_result(loaded.run, suite, record, loaded.provenance())
    loaded.run.event(
        "eval",
        suite=suite,
        step=loaded.step,
        checkpoint=loaded.checkpoint,
        config_hash=loaded.config_hash,
        path=str(path),
        elapsed_s=round(elapsed, 3),
        metrics={k: v for k, v in (payload.get("metrics") or {}).items() if isinstance(v, (int, float))},
    )
    return path, record


def run_suite(
    run_dir: str | Path,
    suite: str,
    *,
    step: int | None = None,
    limit: int | None = None,
    device: str = "auto",
    options: dict | None = None,
) -> Path:
    """Load ``run_dir`` at ``step`` (default: its latest checkpoint), run ``suite`` and write
    ``evals/<suite>.json``; returns the path written."""
    runner = get_runner(suite)  # a wrong name or option fails before the model is loaded
    check_options(suite, runner, {k: v for k, v in (options or {}).items() if k != "limit"})
    loaded = load_run(run_dir, step=step, device=device)
    return run_loaded_suite(loaded, suite, limit=limit, options=options)[0]

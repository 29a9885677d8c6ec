"""The paper's benchmark suites through lm-evaluation-harness: ``ollm`` and ``ablation``.

* ``OLLM``: the six tasks of the Open LLM Leaderboard (v1) that the Jamba paper reports as "OLLM":
  ARC-Challenge 25-shot (acc_norm), HellaSwag 10-shot (acc_norm), MMLU 5-shot (acc), TruthfulQA-MC2 0-shot
  (mc2), WinoGrande 5-shot (acc), GSM8K 5-shot (exact match of the ``#### <number>`` answer,
  "strict-match"). The average is the leaderboard's: the plain mean of the six numbers, with MMLU itself the
  plain mean of its 57 subjects (the leaderboard averaged its ``hendrycksTest-*`` results; lm-eval's
  ``mmlu`` group weights subjects by size, which is reported next to it as ``value_weighted``).
* ``ABLATION``: the benchmarks of the paper's ablation tables: HellaSwag 10-shot (acc_norm), WinoGrande
  5-shot (acc), Natural Questions (open) 5-shot (exact match).

Prompts, metrics and answer filters are lm-eval's own task configs (the installed version is recorded), not
the leaderboard's 2023 harness fork, so absolute numbers are comparable between our runs, not to the old
leaderboard to the decimal. Offline (``offline=True``, or auto when HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is
set or the hub does not answer) the rows come from local copies (evals/benchmark_data.py); every task
records the split it scored, where its few-shot examples came from and where the rows came from. A task
with no offline copy (TruthfulQA) is reported as ``{"status": "unavailable offline", "reason": ...}`` and
the average is then ``null``, with ``average_available`` (the mean over what ran) and the missing tasks.

``limit`` is lm-eval's: the first ``limit`` documents of each task, and of each of MMLU's 57 subjects.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from evals import benchmark_data
from evals.lm_eval_model import JambaAblateLM
from evals.options import LmEvalOptions
from harness.config_errors import ConfigError
from harness.data.benchmarks import benchmarks_dir
from harness.training.loading import LoadedRun

log = logging.getLogger("evals")

FEWSHOT_SEED = 1234  # lm-eval's default few-shot sampling seed, passed explicitly so results record it


@dataclass(frozen=True)
class SuiteTask:
    task: str  # lm-eval task or group name
    shots: int
    metric: str  # the headline metric's name in our results
    key: str  # its key in lm-eval's results: "<metric>,<filter>"


OLLM: tuple[SuiteTask, ...] = (
    SuiteTask("arc_challenge", 25, "acc_norm", "acc_norm,none"),
    SuiteTask("hellaswag", 10, "acc_norm", "acc_norm,none"),
    SuiteTask("mmlu", 5, "acc", "acc,none"),
    SuiteTask("truthfulqa_mc2", 0, "mc2", "acc,none"),  # lm-eval names its MC2 score "acc"
    SuiteTask("winogrande", 5, "acc", "acc,none"),
    SuiteTask("gsm8k", 5, "exact_match", "exact_match,strict-match"),
)
ABLATION: tuple[SuiteTask, ...] = (
    SuiteTask("hellaswag", 10, "acc_norm", "acc_norm,none"),
    SuiteTask("winogrande", 5, "acc", "acc,none"),
    SuiteTask("nq_open", 5, "exact_match", "exact_match,remove_whitespace"),
)
AVERAGES = {
    "ollm": "mean of the six headline values, MMLU as the mean of its 57 subjects (Open LLM Leaderboard v1)",
    "ablation": "mean of the three headline values",
}


def run_ollm(loaded: LoadedRun, options: LmEvalOptions) -> dict:
    """The Open LLM Leaderboard v1 suite; returns the JSON-able payload for ``evals/ollm.json``."""
    return run_suite(
        loaded, "ollm", OLLM, limit=options.limit, batch_size=options.batch_size, offline=options.offline
    )


def run_ablation(loaded: LoadedRun, options: LmEvalOptions) -> dict:
    """The paper's ablation benchmarks; returns the JSON-able payload for ``evals/ablation.json``."""
    return run_suite(
        loaded,
        "ablation",
        ABLATION,
        limit=options.limit,
        batch_size=options.batch_size,
        offline=options.offline,
    )


def run_suite(
    loaded: LoadedRun,
    name: str,
    tasks: tuple[SuiteTask, ...],
    *,
    limit: int | None = None,
    batch_size: int = 8,
    offline: bool | None = None,
) -> dict:
    """Run each task with its own shot count through ``lm_eval.simple_evaluate`` and collect the payload."""
    import lm_eval

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"{name}: limit must be a whole number of documents >= 1 (or None), got {limit!r}")
    offline = benchmark_data.resolve_offline(offline)
    runnable = [t for t in tasks if not offline or benchmark_data.offline_available(t.task)]
    manager = benchmark_data.task_manager(offline) if runnable else None
    lm = JambaAblateLM(loaded=loaded, batch_size=batch_size)
    results: dict[str, dict] = {}
    with _quiet_shot_overrides():
        for spec in tasks:
            if spec in runnable:
                results[spec.task] = _run_task(lm, spec, manager, limit, offline, name)
            else:
                results[spec.task] = _unavailable(spec)
    done = {t: r["value"] for t, r in results.items() if r["status"] == "ok"}
    missing = [t.task for t in tasks if results[t.task]["status"] != "ok"]
    available = sum(done.values()) / len(done) if done else None
    metrics = {f"{t}/{results[t]['metric']}": v for t, v in done.items()}
    metrics["average" if not missing else "average_available"] = available
    return {
        "metrics": metrics,
        "tasks": results,
        "average": None if missing else available,
        "average_available": available,
        "average_over": list(done),
        "missing": missing,
        "average_definition": AVERAGES.get(name, "mean of the headline values"),
        "limit": limit,
        "lm_eval_version": lm_eval.__version__,
        "settings": {
            "offline": offline,
            "data": (
                f"local copies in {benchmarks_dir()} (ablate data show)"
                if offline
                else "Hugging Face hub datasets named by lm-eval's task configs"
            ),
            "limit": limit,
            "limit_meaning": "first N documents of each task (and of each MMLU subject); None = all",
            "batch_size": batch_size,
            "fewshot_seed": FEWSHOT_SEED,
            "seq_len": loaded.seq_len,
            "max_gen_toks": lm.max_gen_toks,
            "truncation": "left, to the training context seq_len",
            "prompts": f"lm-eval {lm_eval.__version__} task configs, unmodified apart from data location",
        },
    }


def _unavailable(spec: SuiteTask) -> dict:
    return {
        "status": "unavailable offline",
        "reason": benchmark_data.UNAVAILABLE_OFFLINE.get(spec.task, "no offline copy of this task"),
        "metric": spec.metric,
        "num_fewshot": spec.shots,
    }


def _run_task(
    lm: JambaAblateLM, spec: SuiteTask, manager, limit: int | None, offline: bool, suite: str
) -> dict:
    import lm_eval

    t0 = time.time()
    log.info("%s: %s, %d-shot, limit %s", suite, spec.task, spec.shots, limit)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[spec.task],
        num_fewshot=spec.shots,
        limit=limit,
        task_manager=manager,
        log_samples=False,
        fewshot_random_seed=FEWSHOT_SEED,
    )
    return _task_result(spec, out, offline, time.time() - t0)


class _DropShotOverride(logging.Filter):
    """Each task's shot count is set on purpose and recorded in the payload; lm-eval would warn about it
    once per task, 57 times for MMLU."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Overwriting default num_fewshot")


@contextlib.contextmanager
def _quiet_shot_overrides():
    logger, flt = logging.getLogger("lm_eval.evaluator"), _DropShotOverride()
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


# ---------------------------------------------------------------------------------------------- results


def _number(value: Any) -> float | None:
    """lm-eval reports "N/A" for a standard error it could not compute (one document)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _metrics(row: dict) -> dict[str, float | None]:
    return {k: _number(v) for k, v in row.items() if k != "alias" and "," in k}


def _splits(cfg: dict) -> tuple[str | None, str | None]:
    """The split lm-eval scores and the one its few-shot examples come from, in lm-eval's order."""
    split = cfg.get("test_split") or cfg.get("validation_split")
    fewshot = (
        cfg.get("fewshot_split")
        or cfg.get("training_split")
        or cfg.get("validation_split")
        or cfg.get("test_split")
    )
    return split, fewshot


def _task_result(spec: SuiteTask, out: dict, offline: bool, seconds: float) -> dict:
    results, configs, counts = out["results"], out["configs"], out["n-samples"]
    leaves = sorted(configs)  # the leaf tasks that ran (one, or MMLU's 57 subjects)
    stderr_key = spec.key.replace(",", "_stderr,", 1)
    cfg = configs[leaves[0]]
    split, fewshot = _splits(cfg)
    entry: dict[str, Any] = {"status": "ok", "metric": spec.metric, "lm_eval_metric": spec.key}
    if spec.task in configs:  # a single task
        row = results[spec.task]
        entry.update(value=_number(row[spec.key]), stderr=_number(row.get(stderr_key)))
        entry["metrics"] = _metrics(row)
    else:  # a group: the leaderboard's plain mean over subtasks, lm-eval's size-weighted one alongside
        subjects = {t: _number(results[t][spec.key]) for t in leaves}
        errors = [_number(results[t].get(stderr_key)) for t in leaves]
        entry["value"] = sum(subjects.values()) / len(subjects)
        entry["stderr"] = (
            math.sqrt(sum(e * e for e in errors)) / len(errors)
            if all(e is not None for e in errors)
            else None
        )
        entry["aggregation"] = f"plain mean over {len(leaves)} subtasks (Open LLM Leaderboard v1)"
        group = results.get(spec.task, {})
        entry["value_weighted"] = _number(group.get(spec.key))
        entry["stderr_weighted"] = _number(group.get(stderr_key))
        entry["subtasks"] = subjects
    entry.update(
        n=sum(counts[t]["effective"] for t in leaves),
        n_total=sum(counts[t]["original"] for t in leaves),
        num_fewshot=cfg.get("num_fewshot"),
        split=split,
        fewshot_split=fewshot,
    )
    if offline:
        where = benchmark_data.describe_offline(spec.task)
        entry.update(
            fewshot_source=where["fewshot_source"],
            data_source=where["data_source"],
            hub_splits=where["hub_splits"],
        )
    else:
        entry.update(
            fewshot_source=(
                f"{fewshot} split, the scored question excluded" if fewshot == split else f"{fewshot} split"
            ),
            data_source="Hugging Face hub: "
            + "/".join(str(x) for x in (cfg.get("dataset_path"), cfg.get("dataset_name")) if x),
        )
    if not entry["num_fewshot"]:
        entry.update(fewshot_split=None, fewshot_source="none (0-shot)")
    versions = {t: (configs[t].get("metadata") or {}).get("version") for t in leaves}
    entry["task_version"] = versions[leaves[0]] if len(set(versions.values())) == 1 else versions
    entry["seconds"] = round(seconds, 1)
    return entry

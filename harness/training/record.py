"""The run record (``run.json``) and the creation of a run directory for a config.

A run directory says everything about itself: ``config.yaml`` is the experiment, and ``run.json`` says what
the run is and how it is to be evaluated, so analysis never has to parse directory names:

```json
{"format": 1, "run_id": "3fa2c1b0e9d4", "config_hash": "3fa2c1b0e9d4", "name": "table4-tiny-1to7-s0",
 "sweep": {"name": "table4-tiny", "file": "/abs/sweeps/table4-tiny.yaml", "description": "...",
           "compare": [{"table": "table4", "baseline": "attention", "rows": {"1:7": "Jamba a:m=1:7"}}]},
 "arm": "1:7", "grid_point": {"optim.lr": 0.0003}, "seed": 0,
 "model": {"pattern": "...", "pattern_compact": "...", "shorthand": "...", "params_total": 1, ...},
 "train": {"steps": 150, "tokens": 307200, "seq_len": 256, "global_batch": 8},
 "eval_plan": {"suites": {"icl": {"options": {...}, "hash": "..."}}, "hash": "..."},
 "created_by": "ablate sweep launch", "created_at": 1.7e9, "updated_at": 1.7e9}
```

``sweep`` and ``arm`` are null for a run of ``ablate train``; the plan is empty then. The launcher rewrites
the record (its plan may have changed) each time it submits the run.
"""

from __future__ import annotations

from typing import Any

from harness.accounting import plan_model
from harness.config_loader import ConfigError, short_hash, to_dict
from harness.training.config import RunConfig, config_hash, config_identity, resolve_run_config
from harness.training.rundir import RunDir

RECORD_FORMAT = 1
EMPTY_PLAN = {"suites": {}, "hash": short_hash({})}


def build_record(
    cfg: RunConfig,
    *,
    created_by: str,
    sweep: dict[str, Any] | None = None,
    arm: str | None = None,
    grid_point: dict[str, Any] | None = None,
    eval_plan: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run record of ``cfg`` (see the module docstring); ``eval_plan`` as evals.plan.plan_record."""
    plan = plan_model(cfg.model_config(), context=cfg.train.seq_len)
    digest = config_hash(cfg)
    return {
        "format": RECORD_FORMAT,
        "run_id": digest,
        "config_hash": digest,
        "name": cfg.name,
        "sweep": sweep,
        "arm": arm,
        "grid_point": dict(grid_point or {}),
        "seed": cfg.train.seed,
        "model": {
            "pattern": plan.pattern,
            "pattern_compact": plan.pattern_compact,
            "shorthand": plan.shorthand,
            "params_total": plan.params_total,
            "params_active": plan.params_active,
            "flops_per_token": plan.flops_per_token,
        },
        "train": {
            "steps": cfg.train.total_steps,
            "tokens": cfg.train.total_steps * cfg.train.tokens_per_step,
            "seq_len": cfg.train.seq_len,
            "global_batch": cfg.train.global_batch,
        },
        "eval_plan": eval_plan or EMPTY_PLAN,
        "created_by": created_by,
    }


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def config_differences(a: RunConfig, b: RunConfig) -> list[str]:
    """``key: old -> new`` for every experiment setting (run-time settings aside) that differs."""
    old, new = _flatten(config_identity(a)), _flatten(config_identity(b))
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def prepare_run_dir(
    cfg: RunConfig, run: RunDir, *, record: dict[str, Any] | None = None, write: bool = True
) -> None:
    """Create the run directory for ``cfg`` (config, status, record), or check that an existing one holds
    this very experiment (run-time settings may differ: a run trained on a GPU resumes on a CPU).

    ``record`` (the launcher's, with sweep, arm and plan) replaces run.json; without it a new directory
    gets the record of a plain ``ablate train`` run. The caller holds the directory's lock; ``write`` is
    False on the ranks that only check."""
    if run.config.exists():
        stored = resolve_run_config(run.read_config(), source=str(run.config))
        if config_hash(stored) != config_hash(cfg):
            changed = "; ".join(config_differences(stored, cfg)[:8])
            raise ConfigError(
                f"{run.root} already holds a run with a different config (run id {config_hash(stored)}; this "
                f"config's id is {config_hash(cfg)}; differences: {changed}). Finished or interrupted runs "
                "are never overwritten: choose another run directory",
                source=str(run.config),
            )
        if write and (record is not None or not run.record.exists()):
            run.write_record(record or build_record(stored, created_by="ablate train"))
        return
    if not write:
        return
    run.create()
    run.write_config(to_dict(cfg))
    run.set_status(state="pending", config_hash=config_hash(cfg), name=cfg.name)
    run.write_record(record or build_record(cfg, created_by="ablate train"))

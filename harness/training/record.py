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

from pathlib import Path
from typing import Any

from harness.accounting import plan_model
from harness.config_errors import ConfigError
from harness.config_schema import short_hash, to_dict
from harness.training.config import RunConfig, config_hash, config_identity, resolve_run_config
from harness.training.rundir import DamagedFile, RunDir

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
    plan = plan_model(cfg.model, context=cfg.train.seq_len)
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


def config_differences(a: RunConfig | dict[str, Any], b: RunConfig | dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every experiment setting (run-time settings aside) that differs; either side
    may be a config identity (:func:`config_identity`, as a checkpoint's meta records it)."""
    old = _flatten(a if isinstance(a, dict) else config_identity(a))
    new = _flatten(b if isinstance(b, dict) else config_identity(b))
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def check_provenance(cfg: RunConfig, run: RunDir, checkpoint: Path, meta: dict[str, Any]) -> None:
    """Refuse a checkpoint trained under another config than the run's ``config.yaml`` (edited since, or a
    checkpoint copied from another run): both run ids and the differing keys. Checkpoints that record no
    config hash (none do since run ids exist) are accepted."""
    stored = meta.get("config_hash")
    current = config_hash(cfg)
    if stored is None or stored == current:
        return
    if isinstance(meta.get("config"), dict):
        changed = "; ".join(config_differences(meta["config"], cfg)[:8]) or "none among the recorded keys"
    else:
        changed = "not recorded by this checkpoint"
    raise ConfigError(
        f"{checkpoint.name} was trained under config {stored}, but the run's config.yaml is now {current} "
        f"(differences: {changed}). Restore config.yaml, or train this config in a new run directory",
        source=str(run.config),
    )


def stored_config(run: RunDir) -> RunConfig:
    """The run's config.yaml, resolved; DamagedFile when it does not read or no longer validates."""
    data = run.read_config()
    try:
        return resolve_run_config(data, source=str(run.config))
    except ConfigError as e:
        where = f"key '{e.key}': " if e.key else ""
        raise DamagedFile(
            run.config,
            f"{where}{e.message}",
            "the run's experiment cannot be read: restore the file, or delete the run directory to start the "
            "run over",
        ) from None


def prepare_run_dir(
    cfg: RunConfig, run: RunDir, *, record: dict[str, Any] | None = None, write: bool = True
) -> None:
    """Create the run directory for ``cfg`` (config, status, record), or check that an existing one holds
    this very experiment (run-time settings may differ: a run trained on a GPU resumes on a CPU).

    ``record`` (the launcher's, with sweep, arm and plan) replaces run.json; without it a new directory
    gets the record of a plain ``ablate train`` run. The caller holds the directory's lock; ``write`` is
    False on the ranks that only check."""
    if run.config.exists():
        stored = stored_config(run)
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

"""``ablate sweep plan FILE``: every run with its arm, pattern, parameters, tokens, FLOPs and estimated
GPU-hours, the sweep's total, and a preview of the sbatch script, without submitting or writing anything."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.accounting import format_params, plan_model
from sweeps.config import (
    ResourcesConfig,
    SweepConfig,
    SweepRun,
    check_runs,
    expand_sweep,
    load_sweep,
)


def run_costs(run: SweepRun, resources: ResourcesConfig) -> dict:
    cfg = run.config
    plan = plan_model(cfg.model, context=cfg.train.seq_len)
    tokens = cfg.train.total_steps * cfg.train.tokens_per_step
    return {
        "pattern": plan.pattern_compact,
        "params_total": plan.params_total,
        "params_active": plan.params_active,
        "tokens": tokens,
        "flops": plan.flops_per_token * tokens,
        "gpu_hours": plan.gpu_hours(tokens, resources.assumed_mfu, resources.gpu_type),
    }


def sbatch_preview(sweep: SweepConfig, n_runs: int, folder: str | None = None) -> str:
    """The sbatch script ``ablate sweep launch`` submits for the sweep's job array (same parameters)."""
    from submitit.slurm.slurm import _make_sbatch_string

    from sweeps.scheduler import slurm_parameters

    folder = folder or str(Path("runs") / sweep.name / ".submitit" / "%j")
    return _make_sbatch_string(
        command=f"python -u -m submitit.core._submit {folder}",
        folder=folder,
        map_count=n_runs if n_runs > 1 else None,
        **slurm_parameters(sweep.resources, sweep.name),
    )


def print_plan(path: str | Path, show_sbatch: bool = True, overrides: Sequence[str] = ()) -> list[dict]:
    sweep = load_sweep(path, overrides)
    runs = expand_sweep(sweep, source=str(path))
    check_runs(sweep, runs, str(path))
    rows = [{"run": run, **run_costs(run, sweep.resources)} for run in runs]
    r = sweep.resources
    print(f"sweep {sweep.name}: {len(runs)} runs" + (f" - {sweep.description}" if sweep.description else ""))
    shape = f"{r.nodes} node(s) x {r.gpus_per_node} GPU(s), {r.cpus_per_task} CPUs/task, time {r.time}"
    assume = f"GPU-hours assume {r.gpu_type.upper()} at MFU {r.assumed_mfu:.0%}"
    print(f"each run: {shape}; {assume}; evals: {', '.join(sweep.evals) or 'none'}")
    w = max([28, *(len(row["run"].label) for row in rows)])  # grid labels can run long
    header = (
        f"{'run':<{w}} {'run_id':<12} {'pattern':<22} {'params':>9} {'active':>9} {'tokens':>9} "
        f"{'FLOPs':>9} {'GPU-h':>9}"
    )
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['run'].label:<{w}} {row['run'].run_id:<12} {row['pattern'][:22]:<22} "
            f"{format_params(row['params_total']):>9} {format_params(row['params_active']):>9} "
            f"{format_params(row['tokens']):>9} {row['flops']:>9.2e} {row['gpu_hours']:>9,.1f}"
        )
    total_hours = sum(row["gpu_hours"] for row in rows)
    total_flops = sum(row["flops"] for row in rows)
    print("-" * len(header))
    blank = f"{'':<12} {'':<22} {'':>9} {'':>9} {'':>9}"
    print(f"{'total':<{w}} {blank} {total_flops:>9.2e} {total_hours:>9,.1f}")
    if r.gpus:
        longest = max(row["gpu_hours"] for row in rows) / r.gpus
        print(
            f"wall-clock per run at {r.gpus} GPUs: up to {longest:,.1f} h "
            f"(time limit {r.time}; runs requeue from checkpoints when it is shorter)"
        )
    if show_sbatch:
        print("\nsbatch preview (one job array; nothing is submitted):\n")
        print(sbatch_preview(sweep, len(runs)))
    return rows

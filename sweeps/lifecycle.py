"""Where each run of a sweep stands, from its run directory and the scheduler: ``ablate sweep status``
and ``ablate sweep cancel``, and the facts ``ablate sweep launch`` decides by.

A run's state combines what the trainer wrote (``status.json``: pending / running / interrupted / done /
failed, step, loss), whether the evaluation results answer the sweep's *current* plan (the final checkpoint,
the same options: :mod:`evals.plan`), who holds the run directory's lock, and the live state of its last
job (``job.json`` + squeue/sacct):

=============  ==============================================================================
not launched   no job was ever submitted for this run
pending        its job waits in the queue and the run has not started
requeued       its job ran and is back in the queue (its time-out, ``scontrol requeue``, preemption, a
               node failure) and waits to resume
running        training (``evaluating`` once training is done and the suites run), or some process holds
               the run directory (e.g. ``ablate train`` or ``ablate eval`` by hand)
done           trained, and every suite of the sweep's plan has a result for the final checkpoint
failed         the trainer failed (e.g. a non-finite loss), or the job ended without finishing
cancelled      the job was cancelled (``ablate sweep cancel``); a relaunch resumes it
interrupted    the job ended (time-out, node failure) without requeueing; a relaunch resumes it
damaged        a state file cannot be read: ``job.json`` or ``config.yaml`` (a relaunch leaves the run alone
               until it is repaired; the detail says how), or ``status.json`` (a relaunch resumes the run
               from its newest good checkpoint, which rewrites it)
=============  ==============================================================================

A damaged state file never stops the command: that run is shown as ``damaged`` with one line naming the
file and what to do, the others as usual. A newest checkpoint whose files do not have the sizes recorded
at save time is named too; its run resumes from the newest good checkpoint when relaunched.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.plan import missing_suites
from harness.locks import describe_holder, read_holder
from harness.training.checkpoint import (
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    verify_checkpoint,
)
from harness.training.config import config_hash
from harness.training.record import config_differences, stored_config
from harness.training.rundir import LOCK_FILE, DamagedFile, RunDir, read_jsonl
from sweeps.config import SweepConfig, SweepRun
from sweeps.scheduler import ACTIVE, live_states, read_job

ACTIVE_STATES = ("pending", "requeued", "running", "evaluating")


def sweep_dir(sweep: SweepConfig, root: str | Path) -> Path:
    return Path(root) / sweep.name


def run_dir(sweep: SweepConfig, run: SweepRun, root: str | Path) -> RunDir:
    return RunDir(sweep_dir(sweep, root) / run.dir_name)


@dataclass
class RunState:
    run: SweepRun
    dir: RunDir
    state: str
    job: dict[str, Any] | None = None
    scheduler_state: str | None = None
    trainer_state: str = "pending"  # what status.json says: pending/running/interrupted/done/failed
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    eta_s: float | None = None
    evals_missing: dict[str, str] = field(default_factory=dict)  # suite -> why its result does not count
    holder: dict[str, Any] | None = None  # who holds the run directory's lock now
    detail: str = ""
    damaged: list[str] = field(default_factory=list)  # one line per damaged state file
    resumable: bool = False  # damaged, but a relaunch resumes it (only status.json is damaged)
    resume_step: int = 0  # the newest good checkpoint's step: where a submitted job starts
    rebuilt_status: dict[str, Any] | None = None  # status.json rebuilt from the directory (it was damaged)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def as_dict(self) -> dict[str, Any]:
        return {
            "arm": self.run.arm,
            "label": self.run.label,
            "run_id": self.run.run_id,
            "run_dir": str(self.dir.root),
            "state": self.state,
            "job_id": self.job["job_id"] if self.job else None,
            "scheduler_state": self.scheduler_state,
            "step": self.step,
            "total_steps": self.total_steps,
            "loss": self.loss,
            "eta_s": self.eta_s,
            "evals_missing": self.evals_missing,
            "holder": self.holder,
            "detail": self.detail,
            "damaged": self.damaged,
        }


def _eta(run: RunDir, step: int, total: int) -> float | None:
    """Seconds to the last step, from the pace of the last logged steps of this job's current start (a
    requeued or resumed job's steps before its restart would count the time it waited as training)."""
    starts = [e.get("time", 0) for e in read_jsonl(run.events) if e.get("event") == "job_start"]
    started = max(starts, default=0)
    records = [r for r in read_jsonl(run.metrics) if "loss" in r and r.get("time", 0) >= started][-20:]
    if len(records) < 2 or records[-1]["step"] <= records[0]["step"]:
        return None
    pace = (records[-1]["time"] - records[0]["time"]) / (records[-1]["step"] - records[0]["step"])
    return max(0.0, (total - step) * pace)


def _last_job_event(run: RunDir) -> str | None:
    kinds = [e.get("event") for e in read_jsonl(run.events)]
    for kind in reversed(kinds):
        if kind in ("job_start", "requeue", "cancel", "submitted"):
            return kind
    return None


def _waiting_state(run: RunDir) -> str:
    """A queued job is ``requeued`` when it has run already: it went back to the queue after starting (its
    own requeue at the time limit, ``scontrol requeue``, a preemption or a node failure); ``pending`` when
    the last thing that happened to the run was its submission."""
    return "requeued" if _last_job_event(run) in ("job_start", "requeue") else "pending"


def run_states(sweep: SweepConfig, runs: list[SweepRun], root: str | Path) -> list[RunState]:
    plan = sweep.eval_plan()
    dirs = [run_dir(sweep, run, root) for run in runs]
    damage: list[list[DamagedFile]] = [[] for _ in runs]
    jobs = [_read(read_job, d, found, None) for d, found in zip(dirs, damage, strict=True)]
    recorded = [read_holder(d.root / LOCK_FILE) for d in dirs]
    remote = [{"executor": "slurm", "job_id": r["job_id"]} for r in recorded if _elsewhere(r)]
    live = live_states([j for j in jobs if j is not None] + remote)
    states = []
    for run, d, job, rec, found in zip(runs, dirs, jobs, recorded, damage, strict=True):
        status = _read(RunDir.status, d, found, {})
        _check_config(run, d, found)
        newest = latest_checkpoint(d.checkpoints)
        bad_checkpoint = verify_checkpoint(newest, checksums=False) if newest is not None else None
        resume_step = checkpoint_step(newest) if newest and bad_checkpoint is None else _newest_good_step(d)
        rebuilt = None
        if any(e.path.name == "status.json" for e in found):  # what the rest of the directory says
            found[:] = [e for e in found if e.path.name != "status.json"]
            status = rebuilt = d.rebuilt_status(resume_step)
        s = RunState(
            run=run, dir=d, state="not launched", job=job, trainer_state=str(status.get("state", "pending"))
        )
        s.step = _int(status.get("step"), 0)
        s.resume_step = resume_step
        s.rebuilt_status = rebuilt
        s.total_steps = _int(status.get("total_steps"), run.config.train.total_steps)
        s.loss = status.get("loss")
        trained = s.trainer_state == "done" and bad_checkpoint is None
        s.evals_missing = (
            missing_suites(d.evals, plan, s.step) if trained else dict.fromkeys(plan, "not trained yet")
        )
        sched = live.get(job["job_id"]) if job else None
        s.scheduler_state = sched
        # flock says who holds it; a holder on another node whose SLURM job is alive holds it too (where
        # the shared filesystem's flock does not reach across nodes).
        s.holder = d.holder() or (rec if _elsewhere(rec) and live.get(rec["job_id"]) in ACTIVE else None)
        if s.holder and sched not in ACTIVE:
            # Someone writes the directory outside the sweep's recorded job (a job a killed launcher never
            # recorded, `ablate train` or `ablate eval` by hand): it is active, and never submitted twice.
            s.state = "evaluating" if trained else "running"
            s.detail = f"held by {describe_holder(s.holder)}"
        elif trained and not s.evals_missing:
            s.state = "done"
        elif job is None:
            s.state = "interrupted" if d.checkpoints.exists() and any(d.checkpoints.iterdir()) else s.state
        elif sched in ACTIVE:  # local jobs report RUNNING while their process lives
            if job.get("executor") == "local" and _last_job_event(d) == "submitted":
                s.state, s.detail = "pending", "waiting for a local slot"  # alive, in line (sweeps/job.py)
            elif sched in ("RUNNING", "COMPLETING"):
                s.state = "evaluating" if trained else "running"
                if not trained:
                    s.eta_s = _eta(d, s.step, s.total_steps)
            else:
                s.state = _waiting_state(d)
        elif s.trainer_state == "failed":
            s.state, s.detail = "failed", status.get("error", "")
        elif (sched and sched.startswith("CANCELLED")) or _last_job_event(d) == "cancel":
            s.state = "cancelled"
        elif trained:
            errors = status.get("eval_errors") if isinstance(status.get("eval_errors"), dict) else {}
            s.state = "failed"
            s.detail = "; ".join(f"{k}: {v}" for k, v in errors.items() if k in s.evals_missing) or (
                f"job ended ({sched}) before evals {', '.join(s.evals_missing)}"
            )
        elif sched in ("FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"):
            s.state, s.detail = "failed", f"job {sched}; see {job.get('stderr')}"
        else:
            s.state, s.detail = "interrupted", f"job {sched or 'ended'} at step {s.step}"
        if rebuilt is not None:
            note = (
                f"status.json was damaged; rebuilt from the run directory ({rebuilt['state']}, step {s.step})"
            )
            s.detail = f"{s.detail}; {note}" if s.detail else note
        if bad_checkpoint is not None:
            note = (
                f"{newest} is damaged ({bad_checkpoint}); a relaunch resumes from the newest good checkpoint"
            )
            s.detail = f"{s.detail}; {note}" if s.detail else note
        if found:
            s.damaged = [str(e) for e in found]
            s.resumable = all(e.path.name == "status.json" for e in found)
            if not s.active:
                s.state, s.detail = "damaged", "; ".join(s.damaged)
        states.append(s)
    return states


def _newest_good_step(run: RunDir) -> int:
    """The step a resume starts from when the newest checkpoint is damaged: the newest that verifies (0 for
    none)."""
    checkpoints = reversed(list_checkpoints(run.checkpoints))
    good = next((p for p in checkpoints if verify_checkpoint(p, checksums=False) is None), None)
    return checkpoint_step(good) if good is not None else 0


def _read(reader, run: RunDir, found: list[DamagedFile], default: Any) -> Any:
    """``reader(run)``; a DamagedFile is kept in ``found`` and ``default`` returned instead."""
    try:
        return reader(run)
    except DamagedFile as e:
        found.append(e)
        return default


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _check_config(run: SweepRun, d: RunDir, found: list[DamagedFile]) -> None:
    """A run directory's config.yaml must read and hold this very run (its id is the directory's)."""
    if not d.config.exists():
        return
    stored = _read(stored_config, d, found, None)
    if stored is not None and config_hash(stored) != run.run_id:
        changed = "; ".join(config_differences(stored, run.config)[:4])
        found.append(
            DamagedFile(
                d.config,
                f"it holds run id {config_hash(stored)}, not this run's {run.run_id}; edited? differences: "
                f"{changed}",
                "restore it, or delete the run directory to start the run over",
            )
        )


def _elsewhere(holder: dict[str, Any]) -> bool:
    """A lock record left by a SLURM job on another host (only the scheduler can say if it is alive)."""
    return bool(holder.get("job_id")) and holder.get("host") != socket.gethostname()


def stale_run_dirs(sweep: SweepConfig, runs: list[SweepRun], root: str | Path) -> list[Path]:
    """Run directories under the sweep's folder that no current run maps to (an arm was edited)."""
    folder = sweep_dir(sweep, root)
    current = {r.dir_name for r in runs}
    if not folder.exists():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_dir() and (p / "config.yaml").exists() and p.name not in current
    )


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def print_status(sweep: SweepConfig, states: list[RunState], root: str | Path) -> None:
    print(f"sweep {sweep.name}: {len(states)} runs in {sweep_dir(sweep, root)}")
    header = (
        f"{'run':<26} {'run_id':<12} {'state':<12} {'job':<12} {'step':>11} {'loss':>7} {'ETA':>6}  evals"
    )
    print(header)
    print("-" * len(header))
    for s in states:
        job = s.job["job_id"] if s.job else "-"
        loss = f"{s.loss:.3f}" if isinstance(s.loss, int | float) else "-"
        done = len(sweep.evals) - len(s.evals_missing)
        evals = f"{done}/{len(sweep.evals)}" if sweep.evals else "-"
        print(
            f"{s.run.label:<26} {s.run.run_id:<12} {s.state:<12} {job:<12} "
            f"{f'{s.step}/{s.total_steps}':>11} {loss:>7} {_fmt_eta(s.eta_s):>6}  {evals}"
        )
        if s.detail:
            print(f"{'':<26} {s.detail}")
        if s.trainer_state == "done":  # why a suite's result does not count (yet)
            for suite, why in s.evals_missing.items():
                print(f"{'':<26} {suite}: {why}")
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    print("-" * len(header))
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    print(f"{summary}  ({time.strftime('%H:%M:%S')})")

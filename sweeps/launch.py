"""``ablate sweep launch FILE``: submit every run of a sweep that still needs work, as one job array.

Launching is idempotent, so after a crash, a preemption or an edit the same command does the right thing:

* a finished run (trained, and every suite of the current evaluation plan answered) is skipped;
* a run whose job is queued or running, or whose directory some live process holds, is left alone;
* an interrupted, cancelled or failed-by-the-scheduler run is resubmitted and resumes from its latest
  checkpoint (evaluation suites already written for the final checkpoint and plan are not run again);
* a run the trainer itself failed (non-finite loss) is reported and resubmitted only with ``retry_failed``;
* an edited arm has a new config hash, hence a new run id and directory: the old result is never touched;
* an edited evaluation plan keeps the run id: only the suites whose options changed run again.

Everything is validated (the whole sweep expands into run configs and its plan resolves) before any
directory is written or any job submitted. One launcher at a time holds the sweep's lock.

A launcher killed at any instant never leads to a second job for a run that has a live one. Before
submitting it writes its intent (``.launch-intent.json``: which runs, which executor); submitit files each
submission (``.submitit/<job id>/<job id>_submitted.pkl``, naming the run directory) before the launcher
records it in the run's ``job.json``. A relaunch that finds an intent left behind reconciles: every filed
job that no ``job.json`` records is recorded (its scheduler state then decides, as for any job); array
jobs whose submission was never filed are cancelled; and submitit files that no run records and no
scheduler runs are removed. Independently, a job that starts while its run directory is held by a live
process leaves it alone (:mod:`sweeps.job`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evals.plan import plan_record
from harness.atomic import atomic_write_text
from harness.config_errors import ConfigError
from harness.config_schema import to_dict
from harness.locks import LockBusy, exclusive
from harness.training.record import build_record, prepare_run_dir
from harness.training.rundir import DamagedFile, RunDir, read_state_json
from sweeps.config import SweepConfig, SweepRun, check_runs, expand_sweep, load_sweep, sweep_data
from sweeps.job import RunJob
from sweeps.lifecycle import RunState, run_states, sweep_dir
from sweeps.scheduler import (
    SubmissionRefused,
    cancel_jobs,
    make_executor,
    pick_executor,
    read_job,
    recorded_job_ids,
    remove_orphans,
    submit_batch,
    submitted_jobs,
    unfiled_array_jobs,
    write_job,
)

INTENT_FILE = ".launch-intent.json"
LOCK_FILE = ".launch.lock"
LOCAL_SLOTS = ".local-slots"  # under the runs root: the line of local jobs waiting to train


@dataclass
class LaunchReport:
    sweep: SweepConfig
    executor: str
    submitted: list[RunState] = field(default_factory=list)
    skipped: list[tuple[RunState, str]] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    reconciled: list[str] = field(default_factory=list)


def _decide(state: RunState, retry_failed: bool) -> str | None:
    """Why the run is not submitted, or None to submit it."""
    if state.state == "done":
        return f"done at step {state.step}, status rebuilt" if state.rebuilt_status else "done"
    if state.state == "damaged" and not state.resumable:
        return state.detail
    if state.active:
        job = f"job {state.job['job_id']}" if state.job else ""
        who = ", ".join(x for x in (job, state.detail if state.holder else "") if x)
        return f"{state.state} ({who or 'no job recorded'})"
    # A full disk is the filesystem's state, not the run's: once space is freed, a plain relaunch resumes.
    disk = state.detail.startswith("disk full")
    if state.state == "failed" and state.trainer_state == "failed" and not retry_failed and not disk:
        return f"failed: {state.detail} (relaunch with --retry-failed to resume it)"
    return None


def _crash_point(name: str) -> None:
    """Fault injection for the launcher-kill test: ``ABLATE_TEST_KILL_LAUNCH=<name>`` kills this process
    (SIGKILL, as a node failure or an OOM killer would) at that point of the submit path."""
    if os.environ.get("ABLATE_TEST_KILL_LAUNCH") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def run_record(sweep: SweepConfig, run: SweepRun, source: str, plan: dict) -> dict:
    """The run.json the launcher writes for ``run`` (its sweep, arm verbatim, grid point and plan)."""
    return build_record(
        run.config,
        created_by="ablate sweep launch",
        sweep={
            "name": sweep.name,
            "file": str(Path(source).resolve()),
            "description": sweep.description,
            "compare": to_dict(sweep.compare),
        },
        arm=run.arm or None,
        grid_point=run.grid_point,
        eval_plan=plan_record(plan),
    )


def reconcile(sweep: SweepConfig, folder: Path, echo: Callable[[str], None] = print) -> list[str]:
    """Finish what a killed launcher left undone (see the module docstring); returns what it did. The
    caller holds the sweep's launch lock."""
    intent_path = folder / INTENT_FILE
    submitit_folder = folder / ".submitit"
    run_dirs = [p for p in folder.iterdir() if p.is_dir() and (p / "config.yaml").exists()]
    done: list[str] = []
    intent = read_state_json(
        intent_path,
        "an earlier launch was killed and what it submitted cannot be read: cancel this sweep's jobs that "
        f"no run's job.json records (squeue --me --name {sweep.name}), then delete the file",
    )
    if intent is not None:
        recorded = recorded_job_ids(run_dirs)
        for job_id, run_dir in submitted_jobs(submitit_folder).items():
            if job_id in recorded or not Path(run_dir).is_dir():
                continue
            write_job(
                RunDir(run_dir), intent["executor"], job_id, submitit_folder / "%j", intent["started_at"]
            )
            done.append(f"recorded job {job_id} for {Path(run_dir).name}")
        if intent["executor"] == "slurm":
            unfiled = unfiled_array_jobs(sweep.name, submitit_folder)
            if unfiled:
                cancel_jobs([{"executor": "slurm", "job_id": j} for j in unfiled])
                done.append(f"cancelled jobs {', '.join(unfiled)}, whose submission was never filed")
        intent_path.unlink()
    # A damaged job.json records nothing: which submitit files (its job's logs) are orphans is then unknown.
    removed = (
        []
        if any(_job_unreadable(d) for d in run_dirs)
        else remove_orphans(submitit_folder, recorded_job_ids(run_dirs))
    )
    if removed:
        done.append(f"removed {len(removed)} orphaned submitit file(s): {', '.join(removed[:5])}")
    for line in done:
        echo(f"reconcile: {line}")
    return done


def _job_unreadable(run_dir: Path) -> bool:
    try:
        read_job(RunDir(run_dir))
    except DamagedFile:
        return True
    return False


def _local_queue(kind: str, sweep: SweepConfig, root: Path, index: int) -> dict[str, Any] | None:
    """Where a local job waits for a slot: every local launch under ``root`` shares one line with
    ``resources.array_parallelism`` slots (as ``%N`` limits a SLURM array), served in ticket order (the
    launch order) among the jobs already waiting: a job whose process starts late joins the line late."""
    if kind != "local":
        return None
    return {
        "folder": str(Path(root).resolve() / LOCAL_SLOTS),
        "slots": sweep.resources.array_parallelism,
        "ticket": f"{time.time_ns():020d}-{index:05d}",
    }


def launch(
    path: str | Path,
    executor: str = "auto",
    root: str | Path = "runs",
    retry_failed: bool = False,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
    overrides: Sequence[str] = (),
) -> LaunchReport:
    """Submit the runs of the sweep file ``path`` (with command-line ``overrides``, harness/overrides.py)
    that still need work; see the module docstring."""
    source = str(path)
    sweep = load_sweep(path, overrides)
    runs = expand_sweep(sweep, source=source)  # validates every run before anything is written
    check_runs(sweep, runs, source)
    plan = sweep.eval_plan(source)
    kind = pick_executor(executor)
    folder = sweep_dir(sweep, root)
    report = LaunchReport(sweep=sweep, executor=kind)
    if dry_run:  # decides, writes nothing (not even the lock)
        _sort(report, run_states(sweep, runs, root), retry_failed, echo)
        for state in report.submitted:
            echo(f"would submit {state.run.label:<26} {state.run.run_id}  ({state.state})")
        return report

    with exclusive(folder / LOCK_FILE, "ablate sweep launch"):
        report.reconciled = reconcile(sweep, folder, echo)
        _sort(report, run_states(sweep, runs, root), retry_failed, echo)
        if not report.submitted:
            echo(f"nothing to submit: all {len(runs)} runs are done or in progress")
            return report

        atomic_write_text(folder / "sweep.yaml", sweep_text(path, sweep))
        for state in report.submitted:
            with state.dir.lock("ablate sweep launch"):
                prepare_run_dir(
                    state.run.config, state.dir, record=run_record(sweep, state.run, source, plan)
                )
        intent = {
            "started_at": time.time(),
            "executor": kind,
            "runs": [state.dir.root.name for state in report.submitted],
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        atomic_write_text(folder / INTENT_FILE, json.dumps(intent, indent=2))
        _crash_point("before_submit")
        submitit_folder = folder / ".submitit" / "%j"
        executor_ = make_executor(kind, submitit_folder, sweep.resources, sweep.name)
        cpus = sweep.resources.cpus_per_task
        work = [
            RunJob(str(s.dir.root), to_dict(s.run.config), cpus, _local_queue(kind, sweep, root, i))
            for i, s in enumerate(report.submitted)
        ]
        try:
            jobs = submit_batch(executor_, work)
        except SubmissionRefused as e:  # nothing was submitted: no intent to reconcile later
            (folder / INTENT_FILE).unlink()
            raise ConfigError(
                f"the {kind} scheduler refused the submission, so nothing was submitted ({e}); start the "
                "controller (scripts/slurm/start.sh for the loopback test cluster) or launch with "
                "--executor local, then launch again (the runs' directories are kept)",
                source=source,
            ) from None
        _crash_point("after_submit")
        for i, (state, job) in enumerate(zip(report.submitted, jobs, strict=True)):
            if i == 1:
                _crash_point("mid_record")
            state.job = write_job(state.dir, kind, str(job.job_id), submitit_folder, intent["started_at"])
            state.dir.event(
                "submitted", executor=kind, job_id=str(job.job_id), resumes_from=state.resume_step
            )
            report.job_ids.append(str(job.job_id))
            verb = f"resume from step {state.resume_step}" if state.resume_step else "submit"
            echo(f"{verb:<6} {state.run.label:<26} {state.run.run_id}  job {job.job_id}  -> {state.dir.root}")
        (folder / INTENT_FILE).unlink()
        # submitit leaves the array's sbatch script behind; SLURM keeps its own copy, and no other launcher
        # of this sweep can be submitting now (the sweep's lock), so each launch cleans up after itself.
        for scratch in (folder / ".submitit").glob(".submission_file_*.sh"):
            scratch.unlink(missing_ok=True)
    if kind == "debug":
        for job in jobs:
            job.result()  # the debug executor runs each job here, in this process
    return report


def sweep_text(path: str | Path, sweep: SweepConfig) -> str:
    """What the sweep folder keeps as its ``sweep.yaml``: the file as launched, its overrides applied."""
    if not sweep.overrides:
        return Path(path).read_text()
    header = (
        f"# {path} with the overrides {' '.join(o.text for o in sweep.overrides)}\n"
        "# (written by ablate sweep launch; the overrides are applied below)\n"
    )
    return header + yaml.safe_dump(sweep_data(path, sweep.overrides), sort_keys=False)


def _sort(report: LaunchReport, states: list[RunState], retry_failed: bool, echo) -> None:
    for state in states:
        reason = _decide(state, retry_failed)
        if reason is None:
            report.submitted.append(state)
        else:
            report.skipped.append((state, reason))
            echo(f"skip   {state.run.label:<26} {state.run.run_id}  {reason}")
            if state.state == "done" and state.rebuilt_status:
                _repair_status(state)


def _repair_status(state: RunState) -> None:
    """Write the rebuilt status.json of a finished run (a job resumed from a checkpoint rewrites its own),
    unless someone holds the directory now."""
    with contextlib.suppress(LockBusy), state.dir.lock("repair"):
        state.dir.set_status(**state.rebuilt_status)


def wait(
    path: str | Path,
    root: str | Path = "runs",
    poll_s: float = 5.0,
    timeout_s: float | None = None,
    echo: Callable[[str], None] = print,
    overrides: Sequence[str] = (),
) -> list[RunState]:
    """Block until no run of the sweep is queued or running; print each state change."""
    sweep = load_sweep(path, overrides)
    runs = expand_sweep(sweep, source=str(path))
    seen: dict[str, tuple[str, int]] = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        states = run_states(sweep, runs, root)
        for s in states:
            key = (s.state, s.step // max(1, s.total_steps // 4))
            if seen.get(s.run.run_id) != key:
                seen[s.run.run_id] = key
                loss = f" loss {s.loss:.3f}" if isinstance(s.loss, int | float) else ""
                progress = f"step {s.step}/{s.total_steps}{loss}"
                echo(f"{time.strftime('%H:%M:%S')} {s.run.label:<26} {s.state:<11} {progress}")
        if not any(s.active for s in states):
            return states
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"sweep {sweep.name} still has active runs after {timeout_s} s")
        time.sleep(poll_s)


def cancel(
    path: str | Path,
    root: str | Path = "runs",
    echo: Callable[[str], None] = print,
    overrides: Sequence[str] = (),
) -> list[RunState]:
    """Cancel the queued and running jobs of the sweep; their checkpoints stay for a later relaunch."""
    sweep = load_sweep(path, overrides)
    runs = expand_sweep(sweep, source=str(path))
    active = [s for s in run_states(sweep, runs, root) if s.active and s.job]
    if not active:
        echo("nothing to cancel: no run of this sweep is queued or running")
        return []
    cancel_jobs([s.job for s in active])
    for s in active:
        s.dir.event("cancel", job_id=s.job["job_id"])
        echo(f"cancelled {s.run.label:<26} job {s.job['job_id']} at step {s.step}")
    return active


def results_summary(sweep: SweepConfig, root: str | Path) -> list[str]:
    """Where the results are: one line per run directory and the evals it holds."""
    lines = []
    for state in run_states(sweep, expand_sweep(sweep), root):
        evals = sorted(p.stem for p in state.dir.evals.glob("*.json")) if state.dir.evals.exists() else []
        where = f"{state.run.label:<26} {state.state:<12} {state.dir.root}"
        lines.append(f"{where}  evals: {', '.join(evals) or '-'}")
    return lines

"""``ablate sweep launch FILE``: submit every run of a sweep that still needs work, as one job array.

Launching is idempotent, so after a crash, a preemption or an edit the same command does the right thing:

* a finished run (trained, every eval suite written) is skipped;
* a run whose job is queued or running is left alone;
* an interrupted, cancelled or failed-by-the-scheduler run is resubmitted and resumes from its latest
  checkpoint (evaluation suites already written for the final checkpoint are not run again);
* a run the trainer itself failed (non-finite loss) is reported and resubmitted only with ``retry_failed``;
* an edited arm has a new config hash, hence a new run id and directory: the old result is never touched.

Everything is validated (the whole sweep expands into run configs) before any directory is written or any
job submitted. Run directories are created before submission, so a queued run already shows in
``ablate sweep status``. A lock file keeps two launches of one sweep from racing.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.atomic import atomic_write_text
from harness.config_loader import ConfigError, to_dict
from harness.sweeps.config import SweepConfig, expand_sweep, load_sweep
from harness.sweeps.job import RunJob
from harness.sweeps.lifecycle import RunState, run_states, sweep_dir
from harness.sweeps.scheduler import make_executor, pick_executor, write_job
from harness.training.trainer import prepare_run_dir


@dataclass
class LaunchReport:
    sweep: SweepConfig
    executor: str
    submitted: list[RunState] = field(default_factory=list)
    skipped: list[tuple[RunState, str]] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)


@contextmanager
def _sweep_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".launch.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another `ablate sweep launch` of this sweep is running (lock {folder / '.launch.lock'})"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_eval_options(sweep: SweepConfig, source: str) -> None:
    """Misspelled eval options fail at launch, not hours later at the end of training."""
    from evals.suites import check_options, get_runner

    for suite, options in sweep.eval_options.items():
        options = {k: v for k, v in options.items() if k != "limit"}
        try:
            check_options(suite, get_runner(suite), options)
        except ConfigError as e:
            raise ConfigError(e.message, source=source, key=f"eval_options.{suite}") from None


def _decide(state: RunState, retry_failed: bool) -> str | None:
    """Why the run is not submitted, or None to submit it."""
    if state.state == "done":
        return "done"
    if state.active:
        return f"{state.state} (job {state.job['job_id'] if state.job else '?'})"
    if state.state == "failed" and state.trainer_state == "failed" and not retry_failed:
        return f"failed: {state.detail} (relaunch with --retry-failed to resume it)"
    return None


def launch(
    path: str | Path,
    executor: str = "auto",
    root: str | Path = "runs",
    retry_failed: bool = False,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> LaunchReport:
    sweep = load_sweep(path)
    runs = expand_sweep(sweep, source=str(path))  # validates every run before anything is written
    check_eval_options(sweep, str(path))
    kind = pick_executor(executor)
    folder = sweep_dir(sweep, root)
    report = LaunchReport(sweep=sweep, executor=kind)
    with _sweep_lock(folder):
        for state in run_states(sweep, runs, root):
            reason = _decide(state, retry_failed)
            if reason is None:
                report.submitted.append(state)
            else:
                report.skipped.append((state, reason))
        for state, reason in report.skipped:
            echo(f"skip   {state.run.label:<26} {state.run.run_id}  {reason}")
        if dry_run or not report.submitted:
            for state in report.submitted:
                echo(f"would submit {state.run.label:<26} {state.run.run_id}  ({state.state})")
            if not report.submitted:
                echo(f"nothing to submit: all {len(runs)} runs are done or in progress")
            return report

        atomic_write_text(folder / "sweep.yaml", Path(path).read_text())
        for state in report.submitted:
            prepare_run_dir(state.run.config, state.dir)
        executor_ = make_executor(kind, folder / ".submitit" / "%j", sweep.resources, sweep.name)
        jobs = []
        submitted_at = time.time()
        with executor_.batch():
            for state in report.submitted:
                job = RunJob(
                    str(state.dir.root),
                    to_dict(state.run.config),
                    sweep.evals,
                    sweep.eval_options,
                    cpus_per_task=sweep.resources.cpus_per_task,
                )
                jobs.append(executor_.submit(job))
        for state, job in zip(report.submitted, jobs, strict=True):
            state.job = write_job(state.dir, kind, job, submitted_at)
            state.dir.event("submitted", executor=kind, job_id=str(job.job_id), resumes_from=state.step)
            report.job_ids.append(str(job.job_id))
            verb = "resume" if state.step else "submit"
            echo(f"{verb:<6} {state.run.label:<26} {state.run.run_id}  job {job.job_id}  -> {state.dir.root}")
        if kind == "debug":
            for job in jobs:
                job.result()  # the debug executor runs each job here, in this process
        return report


def wait(
    path: str | Path,
    root: str | Path = "runs",
    poll_s: float = 5.0,
    timeout_s: float | None = None,
    echo: Callable[[str], None] = print,
) -> list[RunState]:
    """Block until no run of the sweep is queued or running; print each state change."""
    sweep = load_sweep(path)
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
    path: str | Path, root: str | Path = "runs", echo: Callable[[str], None] = print
) -> list[RunState]:
    """Cancel the queued and running jobs of the sweep; their checkpoints stay for a later relaunch."""
    from harness.sweeps.scheduler import cancel_jobs

    sweep = load_sweep(path)
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

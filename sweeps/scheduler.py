"""Executors and live job states: the only module that talks to SLURM (through submitit, squeue, sacct).

Each submitted run gets a job record, ``<run_dir>/job.json`` (executor, job id, submitit folder, log
paths, earlier submissions), so lifecycle commands need only the run directories and the scheduler.

* ``slurm``: :class:`submitit.SlurmExecutor`; one job array per launch. Live state: ``squeue`` for jobs
  still queued or running (needs no accounting), ``sacct`` for how finished ones ended.
* ``local``: :class:`submitit.LocalExecutor`; each run is a job controller process on this machine, which
  keeps running after the launching command exits. Live state: whether that process is alive.
* ``debug``: :class:`submitit.DebugExecutor`; runs in the launching process (for pdb).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import DelayedSubmission, FailedJobError, JobPaths

from harness.atomic import atomic_write_text
from harness.config_errors import ConfigError
from harness.training.rundir import DamagedFile, RunDir, read_state_json
from sweeps.config import ResourcesConfig

EXECUTORS = ("auto", "slurm", "local", "debug")
# squeue states of a job that has not ended (it still holds, or will hold, resources).
ACTIVE = {
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
    "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD",
}  # fmt: skip
JOB_FILE = "job.json"


def pick_executor(kind: str) -> str:
    """``auto`` is SLURM when ``sbatch`` is on PATH, else the local executor."""
    if kind not in EXECUTORS:
        choices = ", ".join(EXECUTORS)
        raise ConfigError(f"unknown executor '{kind}'; choose one of {choices}", key="--executor")
    if kind == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    if kind == "slurm" and not shutil.which("sbatch"):
        raise ConfigError(
            "--executor slurm, but sbatch is not on PATH: run on a SLURM login node, start the test "
            "cluster (scripts/slurm/start.sh), or use --executor local",
            key="--executor",
        )
    return kind


def slurm_parameters(resources: ResourcesConfig, job_name: str) -> dict[str, Any]:
    """The sweep's resources as submitit SlurmExecutor parameters (the names of sbatch's options)."""
    r = resources
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": r.time_minutes,
        "nodes": r.nodes,
        "ntasks_per_node": r.processes_per_node,
        "cpus_per_task": r.cpus_per_task,
        "signal_delay_s": r.signal_delay_s,
        "array_parallelism": r.array_parallelism,
    }
    optional = {
        "partition": r.partition,
        "account": r.account,
        "qos": r.qos,
        "gpus_per_node": r.gpus_per_node or None,
        "mem": f"{r.mem_gb}GB" if r.mem_gb is not None else None,
        "additional_parameters": dict(r.extra_sbatch) or None,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def make_executor(kind: str, folder: Path, resources: ResourcesConfig, job_name: str) -> submitit.Executor:
    if kind == "slurm":
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=resources.max_requeues)
        ex.update_parameters(**slurm_parameters(resources, job_name))
    elif kind == "local":
        if resources.nodes > 1:
            raise ConfigError(
                f"the local executor runs on one node; resources.nodes is {resources.nodes}",
                key="resources.nodes",
            )
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=resources.max_requeues)
        ex.update_parameters(
            timeout_min=resources.time_minutes,
            tasks_per_node=resources.processes_per_node,
            gpus_per_node=resources.gpus_per_node,
            signal_delay_s=resources.signal_delay_s,
        )
    else:
        ex = submitit.DebugExecutor(folder=folder)
    return ex


class SubmissionRefused(Exception):
    """The scheduler refused a batch as a whole (sbatch cannot reach the controller, say): nothing of it was
    submitted. The message is the scheduler's own last line."""


def submit_batch(executor: submitit.Executor, jobs: list[Any]) -> list[submitit.Job]:
    """Submit ``jobs`` as one batch (one array on SLURM); :class:`SubmissionRefused` when it is refused."""
    submitted: list[submitit.Job] = []
    try:
        with executor.batch():
            submitted = [executor.submit(job) for job in jobs]
    except FailedJobError as e:
        text = str(e).strip()
        raise SubmissionRefused(text.splitlines()[-1] if text else type(e).__name__) from None
    return submitted


# ------------------------------------------------------------------------------------------ job records
def read_job(run: RunDir) -> dict[str, Any] | None:
    """The run's job record (None before its first submission); DamagedFile when it cannot be read."""
    path = run.root / JOB_FILE
    record = read_state_json(
        path,
        "this run's job cannot be checked: if no job of it is queued or running (squeue --me), delete the "
        "file and relaunch",
    )
    if record is not None and not (
        isinstance(record.get("job_id"), str) and record.get("executor") in EXECUTORS
    ):
        raise DamagedFile(path, "it records no job id and executor", "delete the file and relaunch")
    return record


def write_job(
    run: RunDir, executor: str, job_id: str, submitit_folder: Path, submitted_at: float
) -> dict[str, Any]:
    """Record job ``job_id`` (its submitit paths under ``submitit_folder``) as the run's current job; the
    previous one moves to ``history``."""
    try:
        previous = read_job(run)
    except DamagedFile:  # replaced: the job recorded now is the one that counts
        previous = None
    history = []
    if previous is not None:
        earlier = previous.pop("history", [])
        history = (earlier if isinstance(earlier, list) else []) + [previous]
    paths = JobPaths(submitit_folder, job_id=job_id)
    record = {
        "executor": executor,
        "job_id": job_id,
        "submitted_at": submitted_at,
        "folder": str(paths.folder),
        "stdout": str(paths.stdout),
        "stderr": str(paths.stderr),
        "history": history,
    }
    atomic_write_text(run.root / JOB_FILE, json.dumps(record, indent=2))
    _link_logs(run, record)
    return record


def _link_logs(run: RunDir, record: dict[str, Any]) -> None:
    """``logs/job-<id>.out|.err`` point at submitit's log files, so the run directory shows its logs."""
    run.logs.mkdir(parents=True, exist_ok=True)
    for stream, suffix in (("stdout", "out"), ("stderr", "err")):
        link = run.logs / f"job-{record['job_id']}.{suffix}"
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(record[stream], run.logs))


def recorded_job_ids(run_dirs: list[Path]) -> set[str]:
    """Every job id the run directories record, current and earlier."""
    ids: set[str] = set()
    for d in run_dirs:
        try:
            record = read_job(RunDir(d))
        except DamagedFile:
            continue
        if record:
            history = record.get("history") if isinstance(record.get("history"), list) else []
            ids.update(str(r["job_id"]) for r in [record, *history] if isinstance(r, dict) and "job_id" in r)
    return ids


def submitted_jobs(submitit_folder: Path) -> dict[str, str]:
    """``job id -> run directory`` of every job whose submission submitit filed under ``submitit_folder``
    (``<id>/<id>_submitted.pkl``, which holds the :class:`RunJob` and so its run directory): the ground
    truth of what reached the scheduler, whatever happened to the launcher afterwards."""
    jobs = {}
    for pickle in sorted(submitit_folder.glob("*/*_submitted.pkl")):
        try:
            run_dir = getattr(DelayedSubmission.load(pickle).function, "run_dir", None)
        except Exception:  # unreadable (a foreign or truncated file): not ours to interpret
            continue
        if run_dir:
            jobs[pickle.name[: -len("_submitted.pkl")]] = str(run_dir)
    return jobs


def unfiled_array_jobs(job_name: str, submitit_folder: Path) -> list[str]:
    """This user's active SLURM jobs named ``job_name`` none of whose tasks submitit filed a submission for
    (their launcher died between sbatch and moving the pickles into place): they would fail after a
    minute without running. squeue prints a pending array as ``<id>_[0-3]``, so jobs are compared by their
    array id."""
    if not shutil.which("squeue"):
        return []
    out = _query(["squeue", "--me", "-h", "-r", "-o", "%i", "--name", job_name])
    filed = {job.split("_")[0] for job in submitted_jobs(submitit_folder)}
    ids = {line.strip().split("_")[0] for line in out.splitlines() if line.strip()}
    return sorted(i for i in ids if i not in filed)


def remove_orphans(submitit_folder: Path, keep: set[str]) -> list[str]:
    """Remove the submitit folders of jobs that no run records and that no longer run (on SLURM or as a
    local process), and the temporary pickles of a submission that never completed; returns their names.
    The caller holds the sweep's launch lock and has recorded every job it wants to keep."""
    if not submitit_folder.is_dir():
        return []
    arrays = {job.split("_")[0] for job in keep}  # an array's own folder holds its sbatch script
    unkept = [e for e in submitit_folder.iterdir() if e.is_dir() and e.name not in keep | arrays]
    slurm = _slurm_states([e.name for e in unkept]) if unkept and shutil.which("squeue") else {}
    removed = []
    for entry in unkept:
        alive = slurm.get(entry.name) in ACTIVE or (entry.name.isdigit() and _pid_alive(int(entry.name)))
        if not alive:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    for pickle in submitit_folder.glob("*.pkl"):
        pickle.unlink(missing_ok=True)
        removed.append(pickle.name)
    return removed


# ------------------------------------------------------------------------------------------ live states
def live_states(records: list[dict[str, Any]]) -> dict[str, str]:
    """``job_id -> state`` for the given job records, queried in one call per scheduler.

    SLURM states are squeue/sacct's (``PENDING``, ``RUNNING``, ``COMPLETED``, ``TIMEOUT``, ``CANCELLED``...);
    local jobs are ``RUNNING`` or ``ENDED``; ``UNKNOWN`` when the scheduler cannot tell.
    """
    states: dict[str, str] = {}
    slurm_ids = [r["job_id"] for r in records if r["executor"] == "slurm"]
    if slurm_ids:
        states.update(_slurm_states(slurm_ids))
    for r in records:
        if r["executor"] == "local":
            states[r["job_id"]] = "RUNNING" if _pid_alive(int(r["job_id"])) else "ENDED"
        elif r["executor"] == "debug":
            states[r["job_id"]] = "ENDED"
    return states


def _slurm_states(job_ids: list[str]) -> dict[str, str]:
    if not shutil.which("squeue"):
        return {j: "UNKNOWN" for j in job_ids}
    states: dict[str, str] = {}
    out = _query(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(job_ids)])
    for line in out.splitlines():
        job, _, state = line.partition("|")
        if job in job_ids:
            states[job] = state.strip()
    ended = [j for j in job_ids if j not in states]
    if ended and shutil.which("sacct"):
        out = _query(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(ended)])
        for line in out.splitlines():
            job, _, state = line.partition("|")
            if job in ended:
                states[job] = state.split()[0] if state.strip() else "UNKNOWN"
    for j in job_ids:
        states.setdefault(j, "UNKNOWN")
    return states


def _query(cmd: list[str]) -> str:
    """stdout of a scheduler query; an unknown job id makes squeue fail, which just means "not queued"."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a recycled pid belongs to some other program
        return b"submitit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def cancel_jobs(records: list[dict[str, Any]]) -> None:
    slurm_ids = [r["job_id"] for r in records if r["executor"] == "slurm"]
    if slurm_ids:
        subprocess.run(["scancel", *slurm_ids], check=True, capture_output=True, text=True)
    for r in records:
        if r["executor"] == "local" and _pid_alive(int(r["job_id"])):
            os.kill(int(r["job_id"]), signal.SIGINT)  # the controller stops its tasks

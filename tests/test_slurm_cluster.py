"""Integration tests on a real single-node SLURM (scripts/slurm/start.sh), driven through submitit.

The session fixture starts the cluster (installing Debian packages on first use, ~15-30 s; then ~7 s from
an empty state, <1 s if it is already up) and skips these tests with the reason when it cannot (not root,
no apt, ...); ``ABLATE_SLURM=0`` skips them outright, ``ABLATE_SLURM=1`` turns the skip into a failure.
Every ``result()`` is guarded by a deadline (``result_within``): submitit itself would wait forever.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_fixture import START, STOP, result_within, run_script, wait_done, wait_state

SCRIPTS = (START, STOP)


# ----------------------------------------------------------------------- the scripts (no cluster needed)
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script: Path):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_stop_without_pid_file_is_a_no_op(tmp_path):
    r = run_script(STOP, timeout=30, SLURM_ROOT=str(tmp_path))
    assert r.returncode == 0, r.stdout
    assert "nothing to stop" in r.stdout


def test_start_rejects_bad_knob_before_doing_anything(tmp_path):
    r = run_script(START, timeout=30, SLURM_ROOT=str(tmp_path / "root"), SLURM_ACCOUNTING="yes")
    assert r.returncode == 2
    assert "SLURM_ACCOUNTING must be 0 or 1" in r.stdout
    assert not (tmp_path / "root").exists()


# --------------------------------------------------------------------------------------- the cluster
@pytest.fixture
def submitit(slurm_cluster):
    import cloudpickle
    import submitit

    # The jobs' Python cannot import this test module (pytest put tests/ on sys.path, the job does not):
    # send its functions and classes by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return submitit


@pytest.fixture
def executor(submitit, tmp_path):
    # A fresh folder per test: job ids restart at 1 when the cluster's state is wiped, and an old
    # "<id>_0_result.pkl" would then be taken for the new job's result.
    ex = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    ex.update_parameters(timeout_min=5, cpus_per_task=1, slurm_partition="debug")
    return ex


def add(a, b):
    return a + b


def square_with_env(x):
    import submitit

    env = submitit.JobEnvironment()
    return x * x, env.array_task_id, env.hostname, time.time()


def fail(x):
    raise ValueError(f"intentional failure with x={x}")


def sleep_for(seconds, marker):
    Path(marker).touch()
    time.sleep(seconds)
    return seconds


def test_trivial_job(executor):
    job = executor.submit(add, 2, 3)
    assert result_within(job, 60) == 5
    assert wait_state(job, "COMPLETED", 30) == "COMPLETED"  # sacct works (accounting is on)


def test_job_array(executor):
    jobs = executor.map_array(square_with_env, range(4))
    assert len(jobs) == 4
    array_id = jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in jobs] == [f"{array_id}_{i}" for i in range(4)]
    results = [result_within(j, 90) for j in jobs]
    assert [r[0] for r in results] == [0, 1, 4, 9]
    assert [r[1] for r in results] == ["0", "1", "2", "3"]


def test_failing_job_raises_with_remote_error(executor, submitit):
    job = executor.submit(fail, 7)
    wait_done(job, 60)
    with pytest.raises(submitit.core.utils.FailedJobError, match="intentional failure with x=7"):
        job.result()


def test_cancel(executor, submitit, tmp_path):
    marker = tmp_path / "started"
    job = executor.submit(sleep_for, 300, marker)
    deadline = time.monotonic() + 60  # sacct says RUNNING ~3 s after the job starts: watch the job itself
    while not marker.exists():
        assert time.monotonic() < deadline, f"job {job.job_id} did not start in 60 s (state {job.state})"
        time.sleep(0.1)
    job.cancel()
    wait_done(job, 30)  # only sacct can tell: a cancelled job writes no result
    assert job.state.startswith("CANCELLED")
    # submitit waits up to 15 s for a result file that a slow shared filesystem may not show yet; the
    # folder is local here (submitit's own tests set this too).
    job._results_timeout_s = 0
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        job.result()


@pytest.fixture
def checkpointable_counter(submitit):
    class Counter(submitit.helpers.Checkpointable):
        """Counts until the 1-minute limit's USR2 checkpoints and requeues it; the requeued run returns."""

        def __init__(self):
            self.count = 0
            self.attempts = 0

        def __call__(self):
            self.attempts += 1
            if self.attempts == 1:
                while True:  # ended by submitit's USR2 handler: checkpoint, requeue, exit
                    self.count += 1
                    time.sleep(0.1)
            return self.count, self.attempts, os.environ.get("SLURM_RESTART_COUNT")

    return Counter


@pytest.mark.slow
def test_checkpointable_job_is_requeued_after_timeout(submitit, tmp_path, checkpointable_counter):
    ex = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    # submitit's default warning (90 s) exceeds the 1-minute limit: SLURM would send USR2 at the job's first
    # time-limit check, which can come before the job's Python has installed submitit's handler (USR2's
    # default action then kills it: "srun: error: ... User defined signal 2"). 30 s leaves it time.
    ex.update_parameters(timeout_min=1, cpus_per_task=1, slurm_partition="debug", slurm_signal_delay_s=30)
    job = ex.submit(checkpointable_counter())
    count, attempts, restarts = result_within(job, 240)
    assert attempts == 2  # the state at the checkpoint (attempts=1) came back, then this run
    assert count > 0  # ... with the count reached before the timeout
    assert restarts == "1"
    log = Path(job.paths.stdout).read_text(errors="replace")
    assert "Calling checkpoint method" in log and "Requeued job" in log, log[-2000:]


def test_start_again_keeps_the_running_cluster(slurm_cluster):
    if os.geteuid() != 0:
        pytest.skip("start.sh needs root")
    t0 = time.monotonic()
    r = run_script(START, timeout=120)
    assert r.returncode == 0, r.stdout
    lines = (slurm_cluster.root / "run" / "last-start").read_text().split()
    assert "started" not in lines, r.stdout
    assert time.monotonic() - t0 < 30

"""What one sweep run executes on its node: train (or resume) the run, then its evaluation suites.

A :class:`RunJob` is a ``submitit.helpers.Checkpointable``. Before the time limit (or on preemption) SLURM
sends USR2; submitit's handler would then call :meth:`checkpoint` and requeue at once, in the middle of a
training step. So the job first puts its own handler in front: it only raises a flag, which the trainer polls
after every optimizer step. All ranks stop at the same step, write a checkpoint of it, and only then is
submitit's handler called to requeue. SIGTERM (``scancel``, a node drain, ``scontrol requeue``: SLURM sends
it, then SIGKILL after its KillWait) raises the same flag, but the job does not requeue itself: it checkpoints
the step it is at, records ``interrupted`` and ends (submitit would ignore the signal and the trainer would
run on until SIGKILL, losing every step since its last checkpoint). A requeued job runs this same object
again; the trainer resumes from that checkpoint exactly (same data order, RNG and optimizer state), and
evaluation suites that already wrote their result for the final checkpoint are not run twice.

The evaluation plan is read from the run directory's ``run.json`` (the launcher writes it before submitting),
not carried in the pickled job: the directory is the one record of what the run is to do. Rank 0 holds the run
directory's lock from start to end; a job that finds it held by a live process (a duplicate submission, a
trainer started by hand) leaves the directory alone and ends, saying who holds it.

Several processes per node (one per GPU) join torch.distributed through the environment that
``submitit.helpers.TorchDistributedEnvironment`` exports, the same variables torchrun sets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from typing import Any

import submitit

from evals.plan import missing_suites, plan_from_record
from harness.locks import LockBusy, queue_slot
from harness.training.config import resolve_run_config
from harness.training.rundir import DamagedFile, RunDir


class RunJob(submitit.helpers.Checkpointable):
    """Train the run in ``run_dir`` from its resolved config (run-time settings included), then run the
    evaluation plan its ``run.json`` records."""

    def __init__(
        self,
        run_dir: str,
        config: dict[str, Any],
        cpus_per_task: int = 1,
        queue: dict[str, Any] | None = None,
    ):
        self.run_dir = str(run_dir)
        self.config = config
        self.cpus_per_task = cpus_per_task
        # Local executor: {"folder", "slots", "ticket"} of the line in which the job waits for a slot
        # (harness.locks.queue_slot), so that at most `slots` runs train at once on the machine.
        self.queue = queue
        self._stop_requested = False
        self._terminated = False

    def __call__(self) -> dict[str, Any]:
        env = submitit.JobEnvironment()
        self._stop_requested = self._terminated = False
        requeue = self._intercept_requeue_signal()
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        _limit_threads(self.cpus_per_task)
        run = RunDir(self.run_dir)
        with contextlib.ExitStack() as held:
            if self.queue is not None and env.num_tasks == 1:
                q = self.queue
                print(f"queued for one of {q['slots']} local slots ({q['folder']})", flush=True)
                slot = held.enter_context(queue_slot(q["folder"], q["slots"], q["ticket"]))
                print(f"local slot {slot} of {q['slots']}", flush=True)
            if env.global_rank == 0:
                try:
                    held.enter_context(run.lock(f"sweep job {env.job_id}"))
                except LockBusy as e:
                    print(f"{e}; this job leaves it alone", flush=True)
                    return {"run_dir": self.run_dir, "state": "busy", "holder": e.holder}
                run.event("job_start", job_id=env.job_id, host=socket.gethostname(), tasks=env.num_tasks)
            return self._train_and_evaluate(run, env.global_rank, requeue)

    def _train_and_evaluate(self, run: RunDir, rank: int, requeue) -> dict[str, Any]:
        from harness.training.trainer import train

        result = train(resolve_run_config(self.config), self.run_dir, should_stop=self._should_stop)
        if result["state"] == "interrupted":
            return self._requeue(requeue, result)
        if rank == 0:
            # Suites written before a requeue, for this very checkpoint and plan, are not run again.
            plan = plan_from_record(run.read_record())
            missing = list(missing_suites(run.evals, plan, result["step"]))
            loaded = self._load(run, missing) if missing else None
            if loaded is not None:
                for suite in missing:
                    if self._should_stop():
                        return self._requeue(requeue, result)
                    self._evaluate(run, loaded, suite, plan[suite])
        return {"run_dir": self.run_dir, "state": "done", "step": result.get("step")}

    # ----------------------------------------------------------------------------------- preemption
    def _intercept_requeue_signal(self):
        """Replace submitit's USR2 handler with one that only sets a flag, and its SIGTERM bypass with one
        that sets it too (then the job does not requeue: ``_terminated``); return submitit's USR2 handler."""
        if not hasattr(signal, "SIGUSR2"):
            return None
        previous = signal.getsignal(signal.SIGUSR2)
        if not callable(previous):  # the debug executor runs in-process without a handler
            return None

        def flag(signum, frame) -> None:
            self._stop_requested = True
            self._terminated = self._terminated or signum == signal.SIGTERM

        signal.signal(signal.SIGUSR2, flag)
        signal.signal(signal.SIGTERM, flag)
        return previous

    def _should_stop(self) -> bool:
        return self._stop_requested

    def _requeue(self, handler, result: dict[str, Any]) -> dict[str, Any]:
        """State is on disk: let submitit's handler call :meth:`checkpoint` and requeue (it exits); after
        SIGTERM, end instead (SLURM requeues the job itself when that is what it was asked to do)."""
        run = RunDir(self.run_dir)
        if self._terminated:
            run.event("terminated", step=result.get("step"))
            return {"run_dir": self.run_dir, "state": "interrupted", "step": result.get("step")}
        run.event("requeue", step=result.get("step"))
        if handler is not None:
            handler(signal.SIGUSR2, None)
        return {"run_dir": self.run_dir, "state": "interrupted", "step": result.get("step")}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Resubmit this job unchanged: the run directory holds everything needed to resume."""
        self._stop_requested = self._terminated = False
        return submitit.helpers.DelayedSubmission(self)

    # ----------------------------------------------------------------------------------- evaluation
    def _load(self, run: RunDir, suites: list[str]):
        """The final checkpoint, loaded once for every suite (None, with the error recorded, if it fails)."""
        from harness.training.loading import load_run

        try:
            return load_run(run.root)
        except Exception as exc:
            self._record_failure(run, suites, exc, 0.0)
            return None

    def _evaluate(self, run: RunDir, loaded, suite: str, options: Any) -> None:
        from evals.runner import run_loaded_suite

        t0 = time.time()
        try:
            run_loaded_suite(loaded, suite, options)
        except Exception as exc:  # one failing suite must not cost the others; the error is recorded
            self._record_failure(run, [suite], exc, time.time() - t0)

    @staticmethod
    def _record_failure(run: RunDir, suites: list[str], exc: Exception, seconds: float) -> None:
        error = f"{type(exc).__name__}: {exc}"
        for suite in suites:
            run.event("eval_failed", suite=suite, error=error, seconds=round(seconds, 1))
        try:
            earlier = run.status().get("eval_errors")
        except DamagedFile:
            earlier = None
        errors = dict(earlier if isinstance(earlier, dict) else {}, **dict.fromkeys(suites, error))
        run.set_status(eval_errors=errors)


def _limit_threads(cpus_per_task: int) -> None:
    """Use the CPUs the task was given, not every core of the node: runs of a sweep that share a machine
    (local executor, or several tasks per node) slow each other down many times over when every one
    spins a thread per core (measured: 5 s instead of 0.1 s per tiny step with two runs on two cores)."""
    import torch

    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    torch.set_num_threads(int(cpus) if cpus.isdigit() else cpus_per_task)

"""A real single-node SLURM cluster for integration tests (scripts/slurm/start.sh and stop.sh).

Use from a test module with a thin session fixture::

    from slurm_fixture import slurm_session

    @pytest.fixture(scope="session")
    def slurm_cluster():
        yield from slurm_session()

Environment:

* ``ABLATE_SLURM=0``: skip the SLURM tests without trying to start anything.
* ``ABLATE_SLURM=1``: the cluster is required (CI): failing to start it fails the tests instead of skipping.
* unset: start it if possible (root, Debian/Ubuntu with apt), skip with the reason otherwise.
* ``SLURM_ROOT`` and the other knobs of start.sh are passed through.

The cluster is stopped at the end of the session only if this fixture started it (start.sh started every
daemon and kept none); a cluster that was already up (e.g. started by CI before the test suite) is left up.
A non-root user can still use a cluster that is already running; only starting one needs root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START = REPO / "scripts" / "slurm" / "start.sh"
STOP = REPO / "scripts" / "slurm" / "stop.sh"
DEFAULT_ROOT = "/tmp/jamba-ablate-slurm"


@dataclass
class SlurmCluster:
    root: Path
    started_here: bool  # this session started it, so it stops it
    start_output: str = ""
    daemons: dict[str, int] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"


def _root() -> Path:
    return Path(os.environ.get("SLURM_ROOT") or DEFAULT_ROOT)


def _last_start(root: Path) -> tuple[list[str], list[str]]:
    started, kept = [], []
    try:
        lines = (root / "run" / "last-start").read_text().splitlines()
    except OSError:
        return started, kept
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "started":
            started.append(parts[1])
        elif len(parts) >= 2 and parts[0] == "kept":
            kept.append(parts[1])
    return started, kept


def _daemons(root: Path) -> dict[str, int]:
    out = {}
    try:
        for line in (root / "run" / "pids").read_text().splitlines():
            name, _, pid = line.partition(" ")
            if pid.strip().isdigit():
                out[name] = int(pid)
    except OSError:
        pass
    return out


def _error_lines(output: str) -> str:
    """The script's ERROR lines, plus the last `fatal:` line of a daemon log tail it printed."""
    lines = output.splitlines()
    errors = [ln.split("ERROR:", 1)[1].strip() for ln in lines if "ERROR:" in ln]
    fatal = [ln.strip() for ln in lines if "fatal:" in ln]
    if fatal:
        errors.append(fatal[-1])
    if errors:
        return "; ".join(errors)
    tail = [ln for ln in output.strip().splitlines() if ln.strip()][-3:]
    return " | ".join(tail) or "no output"


def _cluster_answers(conf: Path) -> bool:
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        r = subprocess.run(["scontrol", "ping"], env=env, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and "UP" in r.stdout


def run_script(script: Path, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    """Run start.sh/stop.sh with stdout and stderr merged into ``.stdout``."""
    return subprocess.run(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )


def slurm_session() -> Iterator[SlurmCluster]:
    """Body of a session-scoped fixture: start (or reuse) the cluster, yield it, stop it if started here."""
    mode = os.environ.get("ABLATE_SLURM", "").strip()
    if mode == "0":
        pytest.skip("SLURM integration tests disabled by ABLATE_SLURM=0")
    required = mode == "1"

    def unavailable(reason: str, details: str = "") -> None:
        if required:
            pytest.fail(f"ABLATE_SLURM=1 but {reason}\n{details}", pytrace=False)
        pytest.skip(f"SLURM unavailable: {reason} (set ABLATE_SLURM=0 to skip without trying)")

    try:
        import submitit  # noqa: F401
    except ImportError:
        unavailable("submitit is not installed (pip install submitit==1.5.4)")
    root = _root()
    if not sys.platform.startswith("linux"):
        unavailable("scripts/slurm/start.sh needs Linux")
    if os.geteuid() != 0:
        # Starting needs root; using a cluster someone already started does not.
        if _cluster_answers(root / "etc" / "slurm.conf"):
            cluster = SlurmCluster(root=root, started_here=False, daemons=_daemons(root))
            yield from _with_conf(cluster)
            return
        unavailable(
            "not root, and no cluster is running under "
            f"{root} (start one with `sudo bash scripts/slurm/start.sh`)"
        )

    t0 = time.monotonic()
    try:
        proc = run_script(START)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        started, kept = _last_start(root)
        if started and not kept:
            run_script(STOP, timeout=120)
        unavailable("scripts/slurm/start.sh did not finish in 900 s", out[-4000:])
    started, kept = _last_start(root)
    started_here = bool(started) and not kept
    if proc.returncode != 0:
        if started_here:  # clean up the daemons this failed start left behind
            run_script(STOP, timeout=120)
        unavailable(
            f"scripts/slurm/start.sh failed (exit {proc.returncode}): {_error_lines(proc.stdout)}",
            proc.stdout[-4000:],
        )
    (root / "log").mkdir(parents=True, exist_ok=True)
    (root / "log" / "pytest-start.log").write_text(proc.stdout)
    print(f"\nSLURM up in {time.monotonic() - t0:.1f}s ({'started' if started_here else 'already running'})")
    cluster = SlurmCluster(
        root=root, started_here=started_here, start_output=proc.stdout, daemons=_daemons(root)
    )
    try:
        yield from _with_conf(cluster)
    finally:
        if started_here:
            stop = run_script(STOP, timeout=180)
            if stop.returncode != 0:
                print(
                    f"scripts/slurm/stop.sh failed (exit {stop.returncode}):\n{stop.stdout}", file=sys.stderr
                )


def _with_conf(cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """Point the SLURM clients (sbatch, sacct, scancel used by submitit) at this cluster's config."""
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


# ------------------------------------------------------------------------------------- job helpers
def _job_logs(job) -> str:
    parts = []
    for name, path in (("stdout", job.paths.stdout), ("stderr", job.paths.stderr)):
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        parts.append(f"--- {name} ({path}) ---\n{text[-2000:]}")
    return "\n".join(parts)


def wait_done(job, timeout: float, poll: float = 0.5) -> None:
    """Poll ``job.done()`` until it is True; after ``timeout`` s cancel the job and fail with its logs.

    Call this before every ``job.result()``: submitit's result() waits forever for a job that never ends.
    """
    deadline = time.monotonic() + timeout
    while not job.done(force_check=True):
        if time.monotonic() > deadline:
            state = job.state
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} not done after {timeout:.0f}s (state {state})\n{_job_logs(job)}")
        time.sleep(poll)


def result_within(job, timeout: float):
    """``job.result()`` with an outer timeout."""
    wait_done(job, timeout)
    return job.result()


def wait_state(job, prefix: str, timeout: float, poll: float = 0.3) -> str:
    """Poll sacct until the job's state starts with ``prefix`` (e.g. RUNNING, COMPLETED, CANCELLED)."""
    deadline = time.monotonic() + timeout
    while True:
        state = job.get_info(mode="force").get("State", "UNKNOWN")
        if state.startswith(prefix):
            return state
        if time.monotonic() > deadline:
            pytest.fail(
                f"job {job.job_id}: state {state!r}, not {prefix} after {timeout:.0f}s\n{_job_logs(job)}"
            )
        time.sleep(poll)

"""Locks between processes: one mechanism (``fcntl.flock`` on a lock file) for every writer that must be
alone.

* :func:`file_lock` waits for its turn: shared caches (a tokenizer, a token cache, a corpus pack, the
  benchmark copies) are built once, by whoever comes first, while the others wait and then reuse it.
* :func:`exclusive` refuses at once when someone else holds the lock, naming them: a run directory has one
  writer (trainer, evaluation or launcher) and a sweep one launcher. The holder writes who it is (host, pid,
  SLURM job, purpose, since when) into the lock file, so the refusal says whom to wait for or stop.

The operating system releases a flock when its holder dies, however it dies (kill -9 included), so a lock
is only ever taken over from a dead holder and nothing needs to be cleaned up by hand. ``exclusive`` is
re-entrant within a process: a sweep job holds its run directory while the trainer it calls takes the
same lock again. flock needs a filesystem that supports it across the machines that share it (local
disks, NFSv4, Lustre/GPFS mounted with flock support); the launcher also checks a recorded holder's SLURM
job, so a job on another node is never doubled even where flock is node-local.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.config_loader import ConfigError


class LockBusy(ConfigError):
    """Someone alive holds the lock; ``holder`` says who (empty when they have not written it yet)."""

    def __init__(self, message: str, holder: dict[str, Any]):
        super().__init__(message)
        self.holder = holder


def this_process(purpose: str) -> dict[str, Any]:
    """Who we are, as a lock holder: host, pid, SLURM job (when run by one), purpose and since when."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "job_id": job,
        "purpose": purpose,
        "since": time.time(),
    }


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (it has not recorded itself yet)"
    job = f", SLURM job {holder['job_id']}" if holder.get("job_id") else ""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    who = f"pid {holder.get('pid')} on {holder.get('host')}{job}"
    return f"{holder.get('purpose', '?')} ({who}, since {since})"


def read_holder(path: str | os.PathLike) -> dict[str, Any]:
    """The holder recorded in a lock file (empty if none or unreadable); it is current only while held."""
    try:
        data = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_ATTEMPTS = 10
# path -> (open file, depth): locks this process holds through ``exclusive``.
_held: dict[str, tuple[Any, int]] = {}


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, purpose: str) -> Iterator[dict[str, Any]]:
    """Hold the lock at ``path`` (created if needed) or raise :class:`LockBusy` naming its live holder."""
    key = os.path.abspath(path)
    if key in _held:
        f, depth = _held[key]
        _held[key] = (f, depth + 1)
        try:
            yield read_holder(key)
        finally:
            f, depth = _held[key]
            _held[key] = (f, depth - 1)
        return
    Path(key).parent.mkdir(parents=True, exist_ok=True)
    f = open(key, "a+")  # noqa: SIM115 - held until the context exits
    for attempt in range(_ATTEMPTS):
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == _ATTEMPTS - 1:
                f.close()
                holder = read_holder(key)
                raise LockBusy(f"{Path(key).parent} is in use by {describe_holder(holder)}", holder) from None
            time.sleep(0.1)  # a moment's grace: current_holder() probes the lock briefly
    me = this_process(purpose)
    f.seek(0)
    f.truncate()
    f.write(json.dumps(me))
    f.flush()
    _held[key] = (f, 1)
    try:
        yield me
    finally:
        _, depth = _held[key]
        if depth <= 1:
            del _held[key]
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        else:
            _held[key] = (f, depth - 1)


def current_holder(path: str | os.PathLike) -> dict[str, Any] | None:
    """The live holder of an :func:`exclusive` lock, or None when nobody holds it."""
    key = os.path.abspath(path)
    if key in _held:
        return read_holder(key)
    if not os.path.exists(key):
        return None
    with open(key, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(key)
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Wait for and hold the lock at ``path`` (created if needed) for the duration of the context."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

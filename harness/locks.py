"""Locks between processes: one mechanism (``fcntl.flock`` on a lock file) for every writer that must be
alone.

* :func:`file_lock` waits for its turn: shared caches (a tokenizer, a token cache, a corpus pack, the
  benchmark copies) are built once, by whoever comes first, while the others wait and then reuse it.
* :func:`exclusive` refuses at once when someone else holds the lock, naming them: a run directory has one
  writer (trainer, evaluation or launcher) and a sweep one launcher. The holder writes who it is (host, pid,
  SLURM job, purpose, since when) into the lock file, so the refusal says whom to wait for or stop.
* :func:`queue_slot` waits in line for one of N slots: the local executor's jobs train at most
  ``resources.array_parallelism`` at once, first come first served, as a SLURM array's ``%N`` would.

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

from harness.config_errors import ConfigError


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


@contextlib.contextmanager
def queue_slot(folder: str | os.PathLike, slots: int, ticket: str, poll: float = 0.5) -> Iterator[int]:
    """Wait in line for one of ``slots`` slots under ``folder`` and hold it (yields its number).

    The line is ``folder/queue/``: one file per waiting process, named by ``ticket`` (sorted names are the
    order of service) and flocked by it while it waits, so the ticket of a process that died is seen to be
    free and removed by whoever looks at it. Only the first live ticket tries the slots (``slot-<i>``, each
    an flock), so the processes are served in ticket order, whatever order they woke up in."""
    line = Path(folder) / "queue"
    line.mkdir(parents=True, exist_ok=True)
    # Locked before it is visible (renamed into the line), so nobody takes a new ticket for a dead one.
    mine = open(line / f".{ticket}.{os.getpid()}", "a+")  # noqa: SIM115 - held while waiting
    fcntl.flock(mine, fcntl.LOCK_EX)
    os.rename(mine.name, line / ticket)
    held = None
    try:
        while held is None:
            if _first_in_line(line, ticket):
                held = _take_free_slot(Path(folder), slots)
            if held is None:
                time.sleep(poll)
        (line / ticket).unlink(missing_ok=True)
        mine.close()
        mine = None
        slot, f = held
        try:
            yield slot
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
    finally:
        if mine is not None:
            (line / ticket).unlink(missing_ok=True)
            mine.close()


def _first_in_line(line: Path, ticket: str) -> bool:
    """Whether ``ticket`` is the first live ticket in ``line`` (dead ones ahead of it are removed)."""
    for name in sorted(n for n in os.listdir(line) if not n.startswith(".")):
        if name == ticket:
            return True
        try:
            with open(line / name, "a+") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # got it: its waiter is gone
                (line / name).unlink(missing_ok=True)
        except BlockingIOError:
            return False  # a live process is ahead
        except FileNotFoundError:
            continue
    return False


def _take_free_slot(folder: Path, slots: int) -> tuple[int, Any] | None:
    for i in range(slots):
        f = open(folder / f"slot-{i}", "a+")  # noqa: SIM115 - held while the slot is used
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        return i, f
    return None

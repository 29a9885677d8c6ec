"""A full disk, said in one line: which path, how much is free, what to do.

A write that runs out of space fails in many voices: ``OSError(ENOSPC)`` from a plain write, a
``RuntimeError`` from deep inside ``torch.save`` ("unexpected pos ... vs ..."), a ``SafetensorError``. The
trainer and the checkpoint writer hand every failed write to :func:`disk_error`, which recognises the
disk's part in it (the errno of a full disk, an exceeded quota or a read-only filesystem, or less room left
than the write needed) and turns it into :class:`DiskFull`, whose message the command line prints instead of
a traceback. :func:`room_warning` is the cheap check before a checkpoint save.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

DISK_ERRNOS = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only"}
MIB = 2**20


class DiskFull(OSError):
    """A write failed for want of space (or quota, or a writable filesystem) under ``path``."""

    def __init__(self, path: str | os.PathLike, why: str, free: int | None, needed: int | None = None):
        self.path, self.why, self.free, self.needed = Path(path), why, free, needed
        room = f"{free / MIB:,.1f} MiB free" if free is not None else "free space unknown"
        need = f", ~{needed / MIB:,.1f} MiB needed" if needed else ""
        super().__init__(
            f"disk full ({why}) writing under {self.path}: {room}{need}. Free space there (or move the "
            "run's directory to a larger filesystem) and run the same command again: the run resumes from "
            "its last complete checkpoint"
        )

    @property
    def status_error(self) -> str:
        """The short form for status.json and `ablate sweep status`."""
        room = f"{self.free / MIB:,.1f} MiB free" if self.free is not None else "free space unknown"
        return f"disk full ({self.why}): {self.path} ({room})"


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to this user on the filesystem holding ``path`` (its nearest existing ancestor)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def disk_error(exc: BaseException, path: str | os.PathLike, needed: int | None = None) -> DiskFull | None:
    """``exc`` as a :class:`DiskFull` when the disk under ``path`` caused it, else None.

    The disk caused it when ``exc`` (or an exception it was raised from) carries a full-disk errno, or
    when less than ``needed`` bytes (a write's size) are free now."""
    if isinstance(exc, DiskFull):
        return exc
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_ERRNOS:
            return DiskFull(seen.filename or path, DISK_ERRNOS[seen.errno], free_bytes(path), needed)
        seen = seen.__cause__ or seen.__context__
    free = free_bytes(path)
    if needed is not None and free is not None and free < needed:
        return DiskFull(path, "no space left", free, needed)
    return None


def room_warning(path: str | os.PathLike, needed: int) -> str | None:
    """A one-line warning when the filesystem under ``path`` has less than ``needed`` bytes free."""
    free = free_bytes(path)
    if free is None or free >= needed:
        return None
    return (
        f"only {free / MIB:,.1f} MiB free under {path} for a checkpoint of ~{needed / MIB:,.1f} MiB (the "
        "last one's size): the save will likely fail; free space now and the run goes on"
    )

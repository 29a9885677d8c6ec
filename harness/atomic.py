"""Atomic writes: a reader sees the old content or the new, never a torn mix, whatever kills the writer.

Every file or directory the harness rewrites goes through here (run directories, checkpoints, tokenizers,
token caches, corpus packs, benchmark copies, reports), so there is one place that gets the details right:

* a file is written to a hidden temporary sibling, flushed and fsync'd, then ``os.replace``'d over the
  old one (the same filesystem, so the rename is atomic), and the parent directory is fsync'd;
* a directory is assembled in a hidden temporary sibling (``.<name>.tmp-*``) and renamed into place only
  when complete; an existing version is moved aside first and removed after. A writer killed half way
  leaves only its temporary, which the next writer of the same directory removes.

Directory writers must hold the lock of what they write (:mod:`harness.locks`): the clean-up of stale
temporaries assumes nobody else is assembling the same directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

TMP_MARK = ".tmp-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically (readable by others: ``mode``, not mkstemp's 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TMP_MARK}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str, mode: int = 0o644) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def remove_stale_temporaries(parent: Path, name_glob: str = "*") -> None:
    """Remove what killed writers left behind in ``parent``: ``.<name>.tmp-*`` entries (files or
    directories) for names matching ``name_glob``. The caller holds the lock of what is written there."""
    for stale in parent.glob(f".{name_glob}{TMP_MARK}*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``final``; on success it replaces ``final`` (whose older
    version, if any, is removed), on failure it disappears. Stale temporaries of ``final`` are removed first.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent, final.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_MARK}", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; shared data and run directories must stay readable
    try:
        yield tmp
        _fsync_tree(tmp)
        old = None
        if final.exists():
            old = final.parent / f".{final.name}{TMP_MARK}old-{os.getpid()}-{time.time_ns()}"
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

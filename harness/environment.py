"""The software stack a number was produced with: the versions of the distributions that decide it, and
the project's own commit.

A loss, a benchmark score or a throughput is only comparable with another measured under the same stack:
a torch release changes kernels, a transformers release changes a tokenizer or an anchor's code path, an
lm-eval release changes a task's prompt. Every run records its stack in ``run.json`` (``environment``, the
stack of the latest training session; each ``start``/``resume`` event keeps its own), every eval result and
every benchmark record carries one, so a report can say which stack produced a number.

Versions are read from the installed distributions' metadata, never by importing them: ``import mamba_ssm``
fails wherever its compiled kernels are missing, and importing lm-eval costs seconds.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# The distributions whose versions decide a number (None where one is not installed).
STACK = (
    "jamba-ablate", "torch", "transformers", "mamba_ssm", "causal_conv1d", "triton", "liger_kernel",
    "lm_eval", "datasets", "tokenizers", "submitit", "numpy", "numba",
)  # fmt: skip


def distribution_version(name: str) -> str | None:
    """The installed version of distribution ``name`` (``-``/``_`` spelled either way), else None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    """``git ARGS`` in the harness's own checkout (not the caller's working directory); None outside one."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def source_commit() -> dict[str, Any]:
    """The commit of the harness's checkout and whether tracked files differ from it (both None for an
    installed copy); read once per process."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit or None, "dirty": None if status is None else bool(status)}


def software_stack() -> dict[str, Any]:
    """``{"python", "packages": {distribution: version or None}, "commit", "dirty"}``."""
    return {
        "python": platform.python_version(),
        "packages": {name: distribution_version(name) for name in STACK},
        **source_commit(),
    }


def stack_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """``name old -> new`` for every package (and the python and commit) that differs between two stacks;
    empty when ``old`` is None (nothing recorded yet) or the same."""
    if not old:
        return []
    before = {"python": old.get("python"), "commit": old.get("commit"), **(old.get("packages") or {})}
    after = {"python": new.get("python"), "commit": new.get("commit"), **(new.get("packages") or {})}
    return [f"{k} {before.get(k)} -> {after[k]}" for k in after if before.get(k) != after[k]]

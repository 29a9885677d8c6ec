"""What a benchmark result needs to be re-measured and compared later: the device, the versions, the commit.

A throughput number without the GPU, the torch / transformers / kernel versions and the code it came from
cannot be checked against a later run, so every ``ablate bench`` that writes JSON goes through
:func:`bench_record` and :func:`write_bench_json`. Versions are read from the installed distributions'
metadata, never by importing them: ``import mamba_ssm`` fails wherever its compiled kernels are missing.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from harness.atomic import atomic_write_text

# Distributions whose versions decide the numbers (causal-conv1d changes every Mamba anchor's speed).
VERSIONED = ("torch", "transformers", "mamba_ssm", "causal_conv1d", "triton")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The commit of the harness's own checkout (not of the caller's working directory), if it is one."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def device_name() -> str:
    """The GPU the benchmarks run on (``torch.cuda`` device 0, as they use), else ``cpu``."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def bench_record(kind: str, config: dict, results: list[dict]) -> dict:
    """A JSON-ready record of one benchmark run: ``kind`` (e.g. ``train``), what was asked, what came out."""
    return {
        "kind": kind,
        "device": device_name(),
        "cuda": torch.version.cuda,
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "versions": {name: _version(name) for name in VERSIONED},
        "commit": _git_commit(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "results": results,
    }


def write_bench_json(record: dict, path: str | os.PathLike) -> Path:
    """Write ``record`` atomically as strict JSON (unknown numbers must be ``None``, not NaN)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(record, indent=2, allow_nan=False) + "\n")
    return path

"""What a benchmark result needs to be re-measured and compared later: the device, the versions, the commit.

A throughput number without the GPU, the torch / transformers / kernel versions and the code it came from
cannot be checked against a later run, so every ``ablate bench`` that writes JSON puts
:func:`provenance` beside its numbers and writes through :func:`write_bench_json`. Versions are read from
the installed distributions' metadata, never by importing them: ``import mamba_ssm`` fails wherever its
compiled kernels are missing.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from harness.atomic import atomic_write_text
from harness.kernels.fused import fused_available

# Distributions whose versions decide the numbers (causal-conv1d changes every Mamba anchor's speed).
VERSIONED = (
    "jamba-ablate", "torch", "transformers", "mamba_ssm", "causal_conv1d", "triton", "liger_kernel", "numpy"
)  # fmt: skip
DEFAULT_DIR = Path("results") / "bench"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
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


def device_name(device: torch.device | None = None) -> str:
    """The GPU a benchmark runs on (``device``, else CUDA device 0 when there is one), else ``cpu``."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def provenance(device: torch.device | None = None) -> dict[str, Any]:
    """Device, host, versions, commit (and whether the checkout had uncommitted changes) and time."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    host = {"python": platform.python_version(), "cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    if device is not None and device.type == "cuda":
        host["gpu_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
        # What model.kernels: auto runs here (harness/kernels/fused.py): fused, or why not.
        host["fused_kernels"] = fused_available() or "available"
    return {
        "device": device_name(device),
        "cuda": torch.version.cuda,
        "host": host,
        "versions": {name: _version(name) for name in VERSIONED},
        "commit": commit or None,
        "dirty": None if status is None else bool(status),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def bench_record(kind: str, config: dict, results: list[dict]) -> dict:
    """A JSON-ready record of one benchmark run: ``kind`` (e.g. ``train``), what was asked, what came out."""
    return {"kind": kind, **provenance(), "config": config, "results": results}


def write_bench_json(record: dict, path: str | os.PathLike) -> Path:
    """Write ``record`` atomically as strict JSON (unknown numbers must be ``None``, not NaN)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(record, indent=2, allow_nan=False) + "\n")
    return path

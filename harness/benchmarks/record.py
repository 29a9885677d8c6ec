"""Where a benchmark's JSON goes and what it carries besides its numbers: device, library versions, commit.

A throughput figure means nothing without the GPU, the torch and kernel versions and the code that produced
it, so every inference benchmark writes them beside its rows.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from harness.atomic import atomic_write_text

PROJECT = Path(__file__).resolve().parents[2]
LIBRARIES = ("jamba-ablate", "torch", "transformers", "mamba_ssm", "causal_conv1d", "numpy")
DEFAULT_DIR = Path("results") / "bench"


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> dict[str, Any]:
    """The checkout's commit and whether it had uncommitted changes (None outside a git checkout)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": bool(dirty)}


def describe_device(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": props.name, "total_memory_bytes": props.total_memory}
    return {
        "type": device.type,
        "name": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


def write_benchmark(
    kind: str, preset: str, payload: dict[str, Any], device: torch.device, out: Path | None
) -> Path:
    """Write ``payload`` with its provenance to ``out`` (default: results/bench/<kind>-<preset>-<time>.json)
    and return the path."""
    path = out or DEFAULT_DIR / f"{kind}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    record = {
        "benchmark": kind,
        "preset": preset,
        "created_at": time.time(),
        "device": describe_device(device),
        "versions": library_versions(),
        **git_commit(),
        **payload,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path

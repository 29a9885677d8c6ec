"""What a benchmark result needs to be re-measured and compared later: the device, the versions, the commit.

A throughput number without the GPU, the torch / transformers / kernel versions and the code it came from
cannot be checked against a later run, so every ``ablate bench`` that writes JSON puts
:func:`provenance` beside its numbers (the software stack from :mod:`harness.environment`) and writes
through :func:`write_bench_json`.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from harness.atomic import atomic_write_text
from harness.environment import software_stack
from harness.kernels.fused import fused_available

DEFAULT_DIR = Path("results") / "bench"


def device_name(device: torch.device | None = None) -> str:
    """The GPU a benchmark runs on (``device``, else CUDA device 0 when there is one), else ``cpu``."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def provenance(device: torch.device | None = None) -> dict[str, Any]:
    """Device, host, versions, commit (and whether the checkout had uncommitted changes) and time."""
    stack = software_stack()
    host = {"python": platform.python_version(), "cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    if device is not None and device.type == "cuda":
        host["gpu_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
        # What model.kernels: auto runs here (harness/kernels/fused.py): fused, or why not.
        host["fused_kernels"] = fused_available() or "available"
    return {
        "device": device_name(device),
        "cuda": torch.version.cuda,
        "host": host,
        "versions": stack["packages"],
        "commit": stack["commit"],
        "dirty": stack["dirty"],
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

"""Where a training step's time goes: the top kernels of a few steps under ``torch.profiler``.

``ablate bench train --profile N`` runs this for our model after its timed steps, over the same batches
again, so the profiler's own overhead never reaches the tokens/s it reports. On CUDA it ranks the GPU
kernels by their self CUDA time (the CPU-side operator entries that launched them are left out, so no time
counts twice); on CPU, where there are no kernels, it ranks operators by self CPU time, which keeps the code
path testable on a laptop. Each entry's share is of the profiled steps' wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from harness.devices import synchronize

NAME_WIDTH = 60


def top_kernels(
    step: Callable[[torch.Tensor], float], batches: Sequence[torch.Tensor], device: torch.device, top: int
) -> dict:
    """Run ``step`` on each batch under the profiler; the ``top`` kernels (operators on CPU) as JSON-ready
    rows of name, total milliseconds, share of the wall time and calls."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    synchronize(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for ids in batches:
            step(ids)
        synchronize(device)
        wall_us = (time.perf_counter() - start) * 1e6
    rows = []
    for event in prof.key_averages():
        if cuda and event.device_type != DeviceType.CUDA:
            continue
        us = event.self_device_time_total if cuda else event.self_cpu_time_total
        if us > 0:
            rows.append(
                {"name": event.key, "total_ms": us / 1e3, "share": us / wall_us, "calls": event.count}
            )
    rows.sort(key=lambda r: -r["total_ms"])
    return {
        "by": "self CUDA time" if cuda else "self CPU time",
        "steps": len(batches),
        "wall_ms": wall_us / 1e3,
        "kernels": rows[:top],
    }


def print_kernels(label: str, summary: dict) -> None:
    """The table of one :func:`top_kernels` summary, names cut to :data:`NAME_WIDTH` characters."""
    print(f"{label}: top {len(summary['kernels'])} by {summary['by']} over {summary['steps']} steps")
    print(f"  {'kernel':<{NAME_WIDTH}} {'total ms':>9} {'share':>6} {'calls':>6}")
    for r in summary["kernels"]:
        name = r["name"] if len(r["name"]) <= NAME_WIDTH else r["name"][: NAME_WIDTH - 3] + "..."
        print(f"  {name:<{NAME_WIDTH}} {r['total_ms']:>9.1f} {r['share']:>6.1%} {r['calls']:>6}")

"""Which torch device a process runs on: the one helper the trainer, evaluations and benchmarks share."""

from __future__ import annotations

import torch

from harness.config_errors import ConfigError


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` is this process's GPU (``cuda:<local rank>``) when CUDA is available, else the CPU; any other
    name is a torch device (``cpu``, ``cuda``, ``cuda:1``), refused clearly when this machine lacks it."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {name!r} ({e}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here; use cpu or auto")
    return device


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has finished its queued work (CUDA runs asynchronously; elsewhere a no-op), so
    that a timer read after it measures the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)

"""Atomic, resumable checkpoints.

A checkpoint is a directory ``checkpoints/step_XXXXXXXX/`` holding

* ``model.safetensors``: the weights (safetensors: no pickle, loadable without this code);
* ``state.pt``: optimizer, scheduler, RNG states (python, numpy, torch CPU and CUDA), the data loader's
  position, the step and token counters;
* ``meta.json``: step, tokens, time, and the config hash, written last.

It is assembled in a temporary sibling directory and renamed into place only when complete
(:func:`harness.atomic.atomic_directory`), so a kill at any moment during a save leaves the previous
checkpoints intact and no half-written one visible.
Older checkpoints beyond ``keep_last`` are removed after the new one is in place.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from harness.atomic import atomic_directory, remove_stale_temporaries

PREFIX = "step_"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (incomplete temporaries are never listed)."""
    if not root.exists():
        return []
    done = [
        p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "meta.json").exists()
    ]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def save_checkpoint(
    root: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    state: dict[str, Any],
    meta: dict[str, Any],
    keep_last: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically and prune old ones; returns its directory."""
    remove_stale_temporaries(root, f"{PREFIX}*")  # left by saves that were killed half way
    final = root / f"{PREFIX}{step:08d}"
    # safetensors refuses shared storage (tied embeddings); store each tensor once, contiguous.
    unique: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, tensor in weights.items():
        key = tensor.data_ptr()
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = tensor.detach().contiguous().cpu()
    # Re-saving a step (a final save right after a periodic one) replaces it.
    with atomic_directory(final) as tmp:
        save_file(unique, str(tmp / "model.safetensors"))
        torch.save({**state, "aliases": aliases}, tmp / "state.pt")
        _slow_down_for_tests(step)
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, "saved_at": time.time()}, indent=2))
    for old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Weights, trainer state and meta of a checkpoint directory."""
    weights = load_file(str(path / "model.safetensors"))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    for name, target in state.pop("aliases", {}).items():
        weights[name] = weights[target]
    meta = json.loads((path / "meta.json").read_text())
    return weights, state, meta


def _slow_down_for_tests(step: int) -> None:
    """Fault injection for the kill-during-save test: ``ABLATE_TEST_SAVE_DELAY=STEP:SECONDS`` pauses the
    save of checkpoint STEP half way (after the weights, before the metadata), touching
    ``ABLATE_TEST_SAVE_MARKER`` first so the test knows when to kill."""
    spec = os.environ.get("ABLATE_TEST_SAVE_DELAY")
    if not spec:
        return
    at, seconds = (int(x) for x in spec.split(":"))
    if at == step:
        marker = os.environ.get("ABLATE_TEST_SAVE_MARKER")
        if marker:
            Path(marker).touch()
        time.sleep(seconds)

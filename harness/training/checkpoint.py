"""Atomic, resumable checkpoints.

A checkpoint is a directory ``checkpoints/step_XXXXXXXX/`` holding

* ``model.safetensors``: the weights (safetensors: no pickle, loadable without this code);
* ``state.pt``: optimizer, scheduler, RNG states (python, numpy, torch CPU and CUDA), the data loader's
  position, the step and token counters;
* ``meta.json``: step, tokens, time, the config hash and the config it hashes (the provenance
  ``ablate eval`` and resume check), and the size and sha256 of each file above, written last.

It is assembled in a temporary sibling directory and renamed into place only when complete
(:func:`harness.atomic.atomic_directory`), so a kill at any moment during a save leaves the previous
checkpoints intact and no half-written one visible.
Older checkpoints beyond ``keep_last`` are removed after the new one is in place.

A checkpoint damaged afterwards (a truncated copy, a disk error) is found by :func:`verify_checkpoint`
against the checksums recorded at save time; :func:`newest_good_checkpoint` skips it, saying which one and
why, and resume and evaluation fall back to the newest one that verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from harness.atomic import TMP_MARK, atomic_directory, remove_stale_temporaries
from harness.diskspace import disk_error
from harness.model.ffn import stack_experts, stack_per_expert

PREFIX = "step_"
FILES = ("model.safetensors", "state.pt")
TMP_DAMAGED = f"{TMP_MARK}damaged-"  # a damaged checkpoint set aside: removed by the next save


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
    return sorted((p for p in done if p.name[len(PREFIX) :].isdigit()), key=checkpoint_step)


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
    # Re-saving a step (a final save right after a periodic one) replaces it. A save that fails leaves no
    # trace (atomic_directory) and the previous checkpoint stays the resume point; a full disk says so.
    needed = sum(t.nbytes for t in unique.values())
    try:
        with atomic_directory(final) as tmp:
            save_file(unique, str(tmp / "model.safetensors"))
            torch.save({**state, "aliases": aliases}, tmp / "state.pt")
            _slow_down_for_tests(step)
            files = {name: _file_record(tmp / name) for name in FILES}
            meta = {**meta, "step": step, "saved_at": time.time(), "files": files}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            for name in FILES:  # one mode for every file of a checkpoint (safetensors writes 0600)
                os.chmod(tmp / name, 0o644)
    except Exception as e:
        if (full := disk_error(e, root, needed)) is not None:
            raise full from e
        raise
    # Prune only older checkpoints: one newer than this step is left from before a resume (and damaged).
    older = [p for p in list_checkpoints(root) if checkpoint_step(p) < step]
    for old in older[: max(0, len(older) - (keep_last - 1))] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_step(path: Path) -> int:
    return int(path.name[len(PREFIX) :])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def read_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's meta.json; ValueError (saying what is wrong) when it cannot be read."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except OSError as e:
        raise ValueError(f"meta.json cannot be read: {e.strerror or e}") from None
    except ValueError as e:
        raise ValueError(f"meta.json is not valid JSON ({e}); truncated?") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise ValueError("meta.json does not record the step")
    return meta


def verify_checkpoint(path: Path, *, checksums: bool = True) -> str | None:
    """None when the checkpoint is whole; else what is wrong, in a phrase. Its files are compared with the
    sizes and (``checksums``) sha256 recorded at save time; a checkpoint saved before checksums were
    recorded is checked for its files only."""
    try:
        meta = read_meta(path)
    except ValueError as e:
        return str(e)
    recorded = meta.get("files") or dict.fromkeys(FILES)
    for name, record in recorded.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if record is None:
            continue
        size = file.stat().st_size
        if size != record.get("bytes"):
            return f"{name} has {size:,} bytes, {record.get('bytes'):,} when saved; truncated?"
        if checksums and _sha256(file) != record.get("sha256"):
            return f"{name} does not match the checksum recorded when it was saved"
    return None


def newest_good_checkpoint(
    root: Path, report: Callable[[Path, str], None] | None = None
) -> tuple[Path, tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]] | None:
    """The newest checkpoint that verifies and loads, and what it holds (:func:`load_checkpoint`); each
    newer one that does not is passed to ``report(path, why)`` and skipped. None when no checkpoint is good.
    """
    for path in reversed(list_checkpoints(root)):
        why = verify_checkpoint(path)
        if why is None:
            try:
                return path, load_checkpoint(path)
            except Exception as e:  # unverifiable older checkpoints: a file that does not load
                why = f"it does not load: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        if report is not None:
            report(path, why)
    return None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Weights, trainer state and meta of a checkpoint directory."""
    weights = load_file(str(path / "model.safetensors"))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    for name, target in state.pop("aliases", {}).items():
        weights[name] = weights[target]
    meta = read_meta(path)
    # Checkpoints written before the MoE experts were stacked (c090509) hold them per expert.
    weights = stack_per_expert(weights)
    if "optimizer" in state:
        state["optimizer"] = _stack_per_expert_optimizer(state["optimizer"])
    return weights, state, meta


def _stack_per_expert_optimizer(optim: dict[str, Any]) -> dict[str, Any]:
    """A full optimizer state dict (keyed by parameter name) with per-expert entries stacked as the
    model's ``Experts`` holds them: AdamW's moments stacked like the weights, the shared step kept, and each
    param group naming the stacked parameters, so such a run resumes exactly."""

    def stack_moments(gates: list[dict], ups: list[dict], downs: list[dict]) -> tuple[dict, dict]:
        gate_up, down = {}, {}
        for key, value in gates[0].items():
            if torch.is_tensor(value) and value.dim() > 0:
                gate_up[key], down[key] = stack_experts(*([m[key] for m in ms] for ms in (gates, ups, downs)))
            else:  # the step count, the same for every expert; one tensor each (AdamW adds to it in place)
                gate_up[key], down[key] = (value.clone() if torch.is_tensor(value) else value for _ in "ud")
        return gate_up, down

    groups = [
        {**group, "params": list(stack_per_expert(dict.fromkeys(group["params"]), lambda *_: (None, None)))}
        for group in optim["param_groups"]
    ]
    return {**optim, "state": stack_per_expert(optim["state"], stack_moments), "param_groups": groups}


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

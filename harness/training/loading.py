"""Load a trained run for evaluation: the model at a checkpoint, its tokenizer and its resolved config.

Evaluations read only the run directory (config.yaml, tokenizer/, checkpoints/), never the sweep file,
so any run, launched by any means, can be evaluated and the result tied to the exact weights it used.
The latest checkpoint is the newest one that verifies against the checksums recorded when it was saved
(a damaged one is named and skipped), and it must have been trained under the run's config.yaml
(else the two run ids and the differing keys are reported).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.config_errors import ConfigError
from harness.data.tokenizer import Tokenizer, load_tokenizer
from harness.devices import resolve_device
from harness.kernels.selective_scan import resolve_backend
from harness.model.lm import HybridLM
from harness.training.checkpoint import (
    PREFIX,
    list_checkpoints,
    load_checkpoint,
    newest_good_checkpoint,
    verify_checkpoint,
)
from harness.training.config import RunConfig, config_hash
from harness.training.record import check_provenance, stored_config
from harness.training.rundir import DamagedFile, RunDir, warn_damage


def _state(run: RunDir) -> str:
    try:
        return run.status().get("state", "?")
    except DamagedFile:
        return "unknown: status.json is damaged"


@dataclass
class LoadedRun:
    """A model ready for evaluation and the facts every result records about where it came from."""

    run: RunDir
    config: RunConfig
    model: HybridLM
    tokenizer: Tokenizer
    step: int
    checkpoint: str
    config_hash: str
    device: torch.device

    @property
    def seq_len(self) -> int:
        """The context the model was trained with (evaluations never feed it more at once)."""
        return self.config.train.seq_len

    def check_positions(self, length: int, what: str, key: str) -> None:
        """Refuse to feed ``length`` tokens past the model's learned positions, which bound its context (the
        suites that test extrapolation: mqar's listed tasks, niah / passkey, position_loss)."""
        rows = self.model.cfg.attention.learned_positions
        if rows and length > rows:
            raise ConfigError(
                f"{key.split('.')[0]}: {what} {length} is past the model's {rows} learned positions "
                "(attention.learned_positions); extrapolation needs a model without them",
                key=key,
            )

    def provenance(self) -> dict:
        return {
            "run_dir": str(self.run.root),
            "run_name": self.config.name,
            "checkpoint": self.checkpoint,
            "step": self.step,
            "config_hash": self.config_hash,
            "pattern": self.model.cfg.pattern,
        }


def load_run(
    run_dir: str | Path, step: int | None = None, device: str = "auto", scan_backend: str | None = None
) -> LoadedRun:
    """The run's model at checkpoint ``step`` (default: the latest), in eval mode on ``device``.

    ``scan_backend`` is the selective-scan implementation to evaluate with (a run-time choice: the one the
    run trained with, e.g. ``cuda``, may not exist on this machine); default ``auto``, the best one for
    ``device``. Raises ConfigError (a user mistake, reported without a traceback) when the directory is not
    a run, has no checkpoint yet, or lacks the asked-for step.
    """
    run = RunDir(run_dir)
    if not run.config.exists():
        raise ConfigError(
            f"{run.root} is not a run directory (no config.yaml); pass a directory made by "
            "`ablate train` or `ablate sweep launch`"
        )
    cfg = stored_config(run)
    if step is None:
        skipped: list[tuple[Path, str]] = []
        found = newest_good_checkpoint(run.checkpoints, lambda path, why: skipped.append((path, why)))
        target = f"evaluating {found[0].name}" if found else "no other checkpoint verifies"
        for path, why in skipped:
            warn_damage(f"{path} is damaged ({why}); skipped, {target}")
        if found is None:
            damaged = " that verifies" if skipped else " yet"
            raise ConfigError(f"{run.root} has no checkpoint{damaged} (state: {_state(run)})")
        ckpt, (weights, _, meta) = found
    else:
        ckpt = run.checkpoints / f"{PREFIX}{step:08d}"
        have = [int(p.name[len(PREFIX) :]) for p in list_checkpoints(run.checkpoints)]
        if ckpt not in list_checkpoints(run.checkpoints):
            raise ConfigError(f"{run.root} has no checkpoint at step {step}; it has steps {have}")
        why = verify_checkpoint(ckpt)
        try:
            weights, _, meta = load_checkpoint(ckpt) if why is None else (None, None, None)
        except Exception as e:
            why = f"it does not load: {type(e).__name__}"
        if why is not None:
            raise DamagedFile(ckpt, why, f"evaluate another step (it has steps {have})")
    check_provenance(cfg, run, ckpt, meta)
    dev = resolve_device(device)
    try:  # an explicit backend that cannot run on this device: the user's choice, said in one line
        resolve_backend(scan_backend or "auto", dev)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(str(e), key="scan_backend") from None
    model_cfg = cfg.model
    model_cfg.mamba = dataclasses.replace(model_cfg.mamba, scan_backend=scan_backend or "auto")
    model = HybridLM(model_cfg)
    model.load_state_dict(weights)
    model.to(dev).eval()
    return LoadedRun(
        run=run,
        config=cfg,
        model=model,
        tokenizer=load_tokenizer(run.tokenizer),
        step=int(meta["step"]),
        checkpoint=ckpt.name,
        config_hash=config_hash(cfg),
        device=dev,
    )

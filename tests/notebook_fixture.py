"""Tiny runs for the notebook tests, built once per test module.

* :func:`write_sweep` / :func:`launch_sweep`: a Table 4 sweep at toy size (pure attention, pure Mamba and the
  1:7 hybrid, one seed, 12 steps of 128 tokens) trained and evaluated (perplexity, attention) in-process by
  the launcher's debug executor, so its run directories are exactly what a real sweep writes.
* :func:`copy_pair`: the copy-trained vs untrained comparison. The probe test's copy training
  (:func:`eval_fixture.train_copying`) applied to a model with attention heads: pure attention with RoPE and
  tied embeddings (the form that learns to copy within a minute on a CPU), context 33 tokens, so the
  attention suite's default repeated sequence (EOS + 16 tokens + the same 16) matches what it was trained on.
  ``untrained`` is the run's initial weights; ``copy-trained`` the same run after the copy training, saved as
  a later checkpoint. Neither has an attention result: the notebook scores them live.

  What it learns: every training sequence has the same period, so within 60 steps heads of layer 0 learn
  to attend a fixed 15 positions back (prefix-matching score about 0.95, untrained about 0.04): a positional
  shortcut that the prefix-matching score, measured at that same period, cannot tell from content-based
  induction. Trained on varied periods the same model needs several hundred steps before real induction
  heads start to form, too slow for the suite.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from analysis_fixture import trained_sweep
from eval_fixture import tiny_run_config, train_copying

from harness.training.checkpoint import PREFIX, list_checkpoints, save_checkpoint
from harness.training.config import resolve_run_config
from harness.training.loading import load_run
from harness.training.trainer import train
from sweeps.launch import launch

SWEEP = trained_sweep(
    "nb-table4",
    arms={
        "attention": {"model": {"preset": "tiny-attention"}},
        "mamba": {"model": {"preset": "tiny-mamba"}},
        "1:7": {"model": {"preset": "tiny-1to7"}},
    },
    seeds=[0],
    compare=[
        {
            "table": "table4",
            "baseline": "attention",
            "rows": {"attention": "Attention", "mamba": "Mamba", "1:7": "Jamba a:m=1:7"},
        }
    ],
    description="Table 4 arms at toy size for the notebook tests",
)


def launch_sweep(folder: Path) -> tuple[Path, Path]:
    """The sweep file and its runs' root, trained and evaluated."""
    path = folder / "nb-table4.yaml"
    path.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    root = folder / "runs"
    launch(path, executor="debug", root=root, echo=lambda s: None)
    return path, root


def copy_pair(folder: Path, steps: int = 60) -> tuple[Path, Path]:
    """(untrained, copy-trained) run directories of one tiny pure-attention RoPE model (see module doc)."""
    cfg = tiny_run_config("tiny-attention-rope", steps=1)
    cfg["name"] = "copy"
    cfg["model"]["tie_embeddings"] = True
    cfg["train"].update(seq_len=33, global_batch=8, micro_batch=8, checkpoint_every=1)
    cfg["optim"]["lr"] = 1e-9  # one step that changes nothing: the run directory of an untrained model
    cfg["schedule"]["warmup_steps"] = 0
    untrained = folder / "untrained"
    train(resolve_run_config(cfg), untrained)
    trained = folder / "copy-trained"
    shutil.copytree(untrained, trained)
    loaded = train_copying(load_run(trained, device="cpu"), steps=steps, pool=64, half_len=16)
    step = int(list_checkpoints(trained / "checkpoints")[-1].name[len(PREFIX) :]) + steps
    save_checkpoint(
        trained / "checkpoints",
        step,
        loaded.model.state_dict(),
        {},
        {"step": step, "note": f"copy training: {steps} steps on EOS + x + x, tokens from the first 64 ids"},
    )
    return untrained, trained

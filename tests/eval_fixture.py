"""Tiny trained checkpoints shared by the evaluation tests (trained once per test session, on CPU).

Two arms on the offline web pack: the 1:7 hybrid (has attention heads) and pure Mamba (has none), 60
steps each, so the models have learned something (held-out loss well below log(vocab)) but the session
pays well under a minute. The packs live in the normal data directory, so they are built once per machine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from evals import probes
from harness.data.packs import prepare
from harness.training.config import resolve_run_config
from harness.training.loading import LoadedRun
from harness.training.trainer import train

EVAL_PACKS = ("web", "books", "code", "imdb")


def tiny_run_config(preset: str, steps: int = 60) -> dict:
    return {
        "name": f"eval-{preset}",
        "model": {"preset": preset},
        "data": {
            "train": [{"name": "c4"}],
            "validation": [],
            "tokenizer": {"kind": "bpe", "vocab_size": 4096, "max_train_bytes": 4_000_000},
        },
        "train": {
            "seq_len": 256,
            "global_batch": 8,
            "micro_batch": 8,
            "steps": steps,
            "seed": 0,
            "eval_every": 0,
            "eval_batches": 2,
            "checkpoint_every": steps,
        },
        "optim": {"lr": 3.0e-3, "weight_decay": 0.1, "grad_clip": 1.0},
        "schedule": {"kind": "cosine", "warmup_steps": 6},
    }


@pytest.fixture(scope="session")
def eval_packs() -> None:
    prepare(packs=EVAL_PACKS)


def _trained(tmp_path_factory, preset: str) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / preset
    train(resolve_run_config(tiny_run_config(preset)), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def hybrid_run(tmp_path_factory, eval_packs) -> Path:
    """Run directory of tiny-1to7 trained 60 steps."""
    return _trained(tmp_path_factory, "tiny-1to7")


@pytest.fixture(scope="session")
def mamba_run(tmp_path_factory, eval_packs) -> Path:
    """Run directory of tiny-mamba trained 60 steps."""
    return _trained(tmp_path_factory, "tiny-mamba")


def train_copying(loaded: LoadedRun, steps: int = 90, pool: int = 32, half_len: int = 3) -> LoadedRun:
    """The run's model trained further on the probe's own format (EOS x x, tokens from the first ``pool``
    ids), so that it learns to read the answer from its context: what the probes must detect."""
    model = loaded.model
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(steps):
        tok = loaded.tokenizer
        seqs, _ = probes.repeated_sequences(64, half_len, tok.vocab_size, tok.eos_id, 1000 + step, pool)
        loss = model(seqs[:, :-1], targets=seqs[:, 1:]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return dataclasses.replace(loaded, model=model.eval())

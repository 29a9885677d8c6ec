"""Checks that need more than one section of a run config, run before anything is written.

``ablate train``, ``ablate sweep launch`` (and its ``--dry-run``) and ``ablate sweep plan`` call
:func:`check_before_writing` on every run: what it refuses would otherwise be found only after the run
directory exists and the tokenizer was trained (the tokenizer's vocabulary against the model's, the
synthetic MQAR tasks against ``train.seq_len`` and the vocabulary, the batch geometry against the number of
processes). The trainer still checks the tokenizer it actually built (a BPE trained on a small corpus may
have fewer tokens than asked for, never more).
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.config_errors import ConfigError
from harness.training.config import RunConfig

GPT2_VOCAB, GPT2_EOS = 50257, 50256


def planned_tokenizer(cfg: RunConfig) -> tuple[int, int]:
    """``(vocab_size, eos_id)`` of the tokenizer the run will use, without building it: a saved tokenizer's
    (``path``), GPT-2's, or the BPE's requested size (its EOS is id 0, the first special token)."""
    tok = cfg.data.tokenizer
    if tok.path is not None:
        directory = Path(tok.path).expanduser()
        meta_path = directory / "tokenizer_meta.json"
        if not (directory / "tokenizer.json").is_file():
            raise ConfigError(f"no tokenizer.json in {directory}", key="data.tokenizer.path")
        try:
            meta = json.loads(meta_path.read_text())
            return int(meta["vocab_size"]), int(meta["eos_id"])
        except (OSError, ValueError, KeyError, TypeError):
            from harness.data.tokenizer import load_tokenizer  # no (valid) meta: read the tokenizer itself

            loaded = load_tokenizer(directory)
            return loaded.vocab_size, loaded.eos_id
    if tok.kind == "gpt2":
        return GPT2_VOCAB, GPT2_EOS
    return tok.vocab_size, 0


def check_before_writing(cfg: RunConfig, world_size: int = 1) -> None:
    """Refuse (ConfigError with the run config's key) what can be known wrong before the run directory is
    written: see the module docstring. ``world_size``: processes the run trains on."""
    loop = cfg.train
    if world_size > 1 and loop.global_batch % (loop.micro_batch * world_size):
        raise ConfigError(
            f"global_batch={loop.global_batch} must be a multiple of micro_batch x processes = "
            f"{loop.micro_batch} x {world_size}",
            key="train.global_batch",
        )
    model_vocab = cfg.model.vocab_size
    vocab, eos = planned_tokenizer(cfg)
    if vocab > model_vocab:
        tok = cfg.data.tokenizer
        what = "the saved tokenizer" if tok.path else "GPT-2's tokenizer" if tok.kind == "gpt2" else "the BPE"
        raise ConfigError(
            f"{what} has {vocab} tokens but model.vocab_size is {model_vocab}; raise model.vocab_size or "
            "shrink data.tokenizer.vocab_size",
            key="data.tokenizer.path"
            if tok.path
            else "model.vocab_size"
            if tok.kind == "gpt2"
            else "data.tokenizer.vocab_size",
        )
    for role in ("train", "validation"):  # the held-out loss reads the validation corpora at the end
        try:
            specs = cfg.data.corpora(role)
        except ConfigError as e:
            raise ConfigError(e.message, key=f"data.{e.key}" if e.key else "data") from None
        if any(spec.is_mqar for spec in specs):
            from harness.data.mqar import run_tasks

            if loop.seq_len < 4:
                raise ConfigError(f"must be >= 4 for mqar, got {loop.seq_len}", key="train.seq_len")
            run_tasks(cfg.data, seq_len=loop.seq_len, vocab_size=vocab, eos=eos, role=role)
        for spec in (s for s in specs if s.is_passkey and s.passkey.min_len is not None):
            if spec.passkey.min_len > loop.seq_len:
                raise ConfigError(
                    f"passkey.min_len {spec.passkey.min_len} exceeds train.seq_len {loop.seq_len}",
                    key=f"data.{role}",
                )

"""Data pipeline: named corpora (hub or local packs), tokenizers and the packing loader.

    from harness.data import (
        DataConfig, CorpusSpec, TokenizerConfig, build_tokenizer, load_tokenizer, make_batches,
    )

    tok = build_tokenizer(data_cfg.tokenizer, data_cfg)   # trains (cached) or loads
    it = make_batches(data_cfg, tok, split="train", seq_len=256, batch_size=8, rank=0, world_size=1, seed=0,
                      start_sample=0, num_workers=0)
    batch = next(it)            # {"input_ids": LongTensor(B, T), "targets": LongTensor(B, T)}
    it.state_dict()             # {"samples_consumed": ..., "fingerprint": ..., ...}

Modules: :mod:`.config` (the dataclasses), :mod:`.sources` (named corpora and the hub/local resolution
rule), :mod:`.packs` (``ablate data prepare``: local packs from registry packages), :mod:`.tokenizer`,
:mod:`.tokens` (the tokenized cache), :mod:`.loader` (packing, order, sharding, resume), :mod:`.mqar` (the
synthetic multi-query associative recall corpus, same loader contract), :mod:`.cli`.
Heavy dependencies (torch, datasets, tokenizers) are imported on first use.
"""

from __future__ import annotations

from harness.data.config import CorpusSpec, DataConfig, MQARConfig, TokenizerConfig, resolve_data_dir

_LAZY = {
    "build_tokenizer": "harness.data.tokenizer",
    "load_tokenizer": "harness.data.tokenizer",
    "gpt2_tokenizer": "harness.data.tokenizer",
    "train_bpe": "harness.data.tokenizer",
    "Tokenizer": "harness.data.tokenizer",
    "EOS_TOKEN": "harness.data.tokenizer",
    "make_batches": "harness.data.loader",
    "build_dataset": "harness.data.loader",
    "BatchIterator": "harness.data.loader",
    "PackedDataset": "harness.data.loader",
    "MQARDataset": "harness.data.mqar",
    "MQARTask": "harness.data.mqar",
    "resolve": "harness.data.sources",
    "DataUnavailableError": "harness.data.sources",
    "NAMED_CORPORA": "harness.data.corpora",
    "prepare": "harness.data.packs",
    "write_pack": "harness.data.packs",
}

__all__ = ["CorpusSpec", "DataConfig", "MQARConfig", "TokenizerConfig", "resolve_data_dir", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.data' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

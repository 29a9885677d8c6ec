"""Data configuration: corpora (by name or as explicit hub/file specs), mixtures and the tokenizer.

A YAML ``data:`` section, built with :func:`harness.config_loader.from_dict` (strict: unknown keys and wrong
types fail with the key path and the nearest valid key)::

    data:
      train:                        # a weighted mixture; each entry is a CorpusSpec
        - {name: c4, weight: 0.6}   # allenai/c4 'en' on a cluster, the local 'web' pack offline
        - {name: books, weight: 0.3}
        - {name: code, weight: 0.1}
      validation: []                # empty: the held-out split of every train corpus
      tokenizer: {kind: bpe, vocab_size: 65536}
      data_dir: null                # default: $ABLATE_DATA_DIR, else ~/.cache/jamba-ablate/data
      max_tokens: null              # token cap per corpus (hub corpora: see harness.data.loader)

Named corpora and how a name resolves to the hub or to a local pack are documented in
:mod:`harness.data.sources`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness.config_loader import ConfigError
from harness.data.corpora import all_corpus_names, canonical_name, suggest_corpus

DEFAULT_DATA_DIR = "~/.cache/jamba-ablate/data"
DATA_DIR_ENV = "ABLATE_DATA_DIR"


@dataclass
class CorpusSpec:
    """One corpus of a mixture.

    ``name`` is a named corpus (``c4``/``web``, ``books``/``pg19``, ``code``, ``imdb``: see
    :data:`harness.data.corpora.NAMED_CORPORA`), or any label when the corpus is given explicitly by
    ``hub_path`` (a Hugging Face dataset), ``data_files`` (your own local files) or ``source: local`` (a
    pack of that name under the data dir, e.g. one written with :func:`harness.data.packs.write_pack`).

    ``source``: ``auto`` (the resolution rule in :mod:`harness.data.sources`), ``hub`` (always the hub) or
    ``local`` (always the local pack). The hub fields override the named corpus's defaults; ``split``
    defaults to the role's split (``train`` for ``DataConfig.train``, the held-out split for
    ``DataConfig.validation``).
    """

    name: str
    weight: float = 1.0
    source: Literal["auto", "hub", "local"] = "auto"
    hub_path: str | None = None  # e.g. "allenai/c4"
    hub_config: str | None = None  # the `name` argument of datasets.load_dataset, e.g. "en"
    split: str | None = None
    text_field: str | None = None  # e.g. "text" (c4, pg19), "content" (codeparrot)
    streaming: bool | None = None  # hub default: True (tokenize a prefix without a full download)
    data_files: list[str] | None = None  # local .jsonl/.json(.gz)/.parquet/.txt files (txt: one doc per file)
    max_tokens: int | None = (
        None  # cap on the tokens taken from this corpus (overrides DataConfig.max_tokens)
    )

    def __post_init__(self):
        if not self.name:
            raise ConfigError("a corpus needs a name", key="name")
        if not (self.weight > 0):
            raise ConfigError(f"weight must be > 0, got {self.weight!r}", key="weight")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise ConfigError(f"max_tokens must be >= 2, got {self.max_tokens!r}", key="max_tokens")
        if self.data_files is not None and not self.data_files:
            raise ConfigError("data_files is an empty list", key="data_files")
        if self.data_files and self.hub_path:
            raise ConfigError("give either hub_path or data_files, not both", key="data_files")
        explicit = self.hub_path is not None or self.data_files is not None or self.source == "local"
        if canonical_name(self.name) is None and not explicit:
            hint = suggest_corpus(self.name)
            suggestion = f" Did you mean '{hint}'?" if hint else ""
            raise ConfigError(
                f"unknown corpus '{self.name}'.{suggestion} Named corpora: {', '.join(all_corpus_names())}; "
                "or give hub_path (a Hugging Face dataset), data_files (local files) or source: local "
                "(a pack of that name under the data dir)",
                key="name",
            )
        if self.source == "hub" and self.data_files:
            raise ConfigError("source: hub cannot be used with data_files", key="source")


@dataclass
class TokenizerConfig:
    """The tokenizer of a run.

    ``kind: bpe`` trains a byte-level BPE (paper-style: ``vocab_size`` tokens including the EOS token,
    every digit its own token, no dummy prefix space, all 256 bytes in the base alphabet so any UTF-8
    round-trips exactly) on ``max_train_bytes`` of the train splits of ``train_corpus`` (corpus names;
    default: the data config's train corpora), cached under the data dir. ``kind: gpt2`` is the GPT-2 BPE
    (50,257 tokens, ids identical to GPT-2), loaded offline from the ``gpt2`` pack (``ablate data prepare
    --packs gpt2``); ``vocab_size`` is then ignored. ``path`` loads a saved tokenizer directory instead (a
    run directory's ``tokenizer/``), whatever the kind.
    """

    kind: Literal["bpe", "gpt2"] = "bpe"
    vocab_size: int = 65536
    train_corpus: str | list[str] | None = None
    max_train_bytes: int = 64_000_000
    min_frequency: int = 2
    path: str | None = None

    def __post_init__(self):
        if isinstance(self.train_corpus, str):
            self.train_corpus = [c.strip() for c in self.train_corpus.split(",") if c.strip()]
        if self.kind == "bpe" and self.vocab_size < 258:
            raise ConfigError(
                "a byte-level BPE needs vocab_size >= 258 (256 bytes + EOS + 1 merge), "
                f"got {self.vocab_size}",
                key="vocab_size",
            )
        if self.max_train_bytes < 1:
            raise ConfigError(
                f"max_train_bytes must be >= 1, got {self.max_train_bytes}", key="max_train_bytes"
            )
        if self.min_frequency < 1:
            raise ConfigError(f"min_frequency must be >= 1, got {self.min_frequency}", key="min_frequency")


@dataclass
class DataConfig:
    """Train/validation corpora, the tokenizer and where local data lives (see the module docstring)."""

    train: list[CorpusSpec] = field(default_factory=lambda: [CorpusSpec(name="c4")])
    validation: list[CorpusSpec] = field(default_factory=list)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data_dir: str | None = None
    max_tokens: int | None = None

    def __post_init__(self):
        if not self.train:
            raise ConfigError("data.train needs at least one corpus", key="train")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise ConfigError(f"max_tokens must be >= 2, got {self.max_tokens!r}", key="max_tokens")

    def corpora(self, split: str) -> list[CorpusSpec]:
        """The corpora of ``split`` ('train' or 'validation'); an empty validation list means the held-out
        split of each train corpus (same weights and hub fields; not its ``max_tokens`` or ``split``, and
        ``data_files`` corpora have none)."""
        if split == "train":
            return list(self.train)
        if split in ("validation", "val", "eval"):
            if self.validation:
                return list(self.validation)
            return [
                CorpusSpec(
                    name=s.name,
                    weight=s.weight,
                    source=s.source,
                    hub_path=s.hub_path,
                    hub_config=s.hub_config,
                    text_field=s.text_field,
                    streaming=s.streaming,
                )
                for s in self.train
                if s.data_files is None
            ] or _no_validation(self)
        raise ConfigError(f"unknown split '{split}'; use 'train' or 'validation'")


def _no_validation(cfg: DataConfig):
    raise ConfigError(
        "no validation corpora: the train corpora are all data_files; list data.validation explicitly",
        key="validation",
    )


def resolve_data_dir(data_dir: str | os.PathLike | DataConfig | None = None) -> Path:
    """The data directory: an explicit path (or ``DataConfig.data_dir``), else ``$ABLATE_DATA_DIR``, else
    ``~/.cache/jamba-ablate/data``."""
    if isinstance(data_dir, DataConfig):
        data_dir = data_dir.data_dir
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(os.path.expandvars(str(data_dir))).expanduser()

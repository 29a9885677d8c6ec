"""Data configuration: corpora (by name or as explicit hub/file specs), mixtures and the tokenizer.

A YAML ``data:`` section, built with :func:`harness.config_schema.from_dict` (strict: unknown keys and wrong
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
:mod:`harness.data.sources`. The synthetic corpus ``mqar`` (multi-query associative recall, generated on the
fly: :class:`MQARConfig`, :mod:`harness.data.mqar`) takes the place of text corpora::

    data:
      train: [{name: mqar, mqar: {num_pairs: [8, 32, 64], seq_lens: [256]}}]
      tokenizer: {kind: bpe, vocab_size: 8192, train_corpus: [web]}   # a text tokenizer is still built

So does ``passkey`` (a pass key hidden in filler text and asked for at the end, loss on the answer only:
:class:`PasskeyConfig`, :mod:`harness.data.needle`), with which a model trained at a short length is then
tested far past it by the ``passkey`` evaluation suite::

    data:
      train: [{name: passkey, passkey: {digits: 5}}]
      tokenizer: {kind: bpe, vocab_size: 4096, train_corpus: [web]}
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness.config_errors import ConfigError
from harness.config_schema import later_field
from harness.data.corpora import all_corpus_names, canonical_name, suggest_corpus

DEFAULT_DATA_DIR = "~/.cache/jamba-ablate/data"
DATA_DIR_ENV = "ABLATE_DATA_DIR"
MQAR = "mqar"  # the synthetic corpora's names
PASSKEY = "passkey"
SYNTHETIC = (MQAR, PASSKEY)


def _as_list(value: int | list[int] | None) -> list[int] | None:
    return [value] if isinstance(value, int) else value


@dataclass
class MQARConfig:
    """Multi-query associative recall (Arora et al. 2023, "Zoology", their ``multiquery_ar``), generated on
    the fly, as the ``mqar`` corpus of ``data.train`` (``{name: mqar, weight: 1, mqar: {...}}``).

    A sequence of length ``L`` with ``N`` pairs is ``k1 v1 k2 v2 ... kN vN`` followed by a query region of
    ``(L - 2N) // 2`` two-token slots: each key is queried once, in a slot drawn from a power law, and the
    model must predict the key's value at the query's position. Targets are -100 everywhere else, so the
    loss and the accuracy count answers only. Every other token of the query region is uniform noise
    (zoology's ``random_non_queries``). Keys come from the lower half of the ids ``[0, vocab)`` without the
    tokenizer's EOS id, values from the upper half, noise from all of them: no id reaches ``vocab`` (at most
    the tokenizer's, hence the model's, vocab_size) and none is EOS. An instance shorter than the run's
    ``train.seq_len`` is padded to it with noise tokens whose targets are -100.

    The training mixture is every ``(seq_len, num_pairs)`` combination of the two lists, equally weighted
    (each must fit: ``4 * num_pairs <= seq_len``, as in zoology). For another mixture, e.g. zoology's
    (64, 4), (128, 8), (256, 16..64), list several ``mqar`` corpora, each with its own ``weight``.
    Sequences are deterministic functions of the run's seed (``train.seed``), the split, the task and the
    sample index; train, validation (held-out loss) and evals/mqar.py's test sequences are independent
    streams.

    Fields (one line of rationale each):

    * ``num_pairs``: key-value pairs per sequence, the difficulty axis: a recurrent state must hold them
      all, attention looks them up (zoology Fig. 2 uses 4-64).
    * ``seq_lens``: instance lengths (zoology's ``input_seq_len``); null: the run's ``train.seq_len``. A
      longer sequence at fixed pairs spreads the pairs over more noise and lengthens key-to-query gaps.
    * ``vocab``: token ids the task draws from; null: the tokenizer's vocab_size. Zoology uses 8192 and
      finds large vocabularies (> 1k) separate architectures; must not exceed the tokenizer's vocab_size.
    * ``power_a``: the query-gap law ``p(slot s) ~ s**(power_a - 1)`` (zoology's 0.01: most queries come
      soon after the pairs, some much later); 1.0 spreads them uniformly.
    * ``answers_in_input``: put the answer after each query in the input (``q a q a``, teacher forcing, the
      format of the ``induction`` suite's MQAR probe) instead of a noise token (zoology).
    * ``filler``: what fills the query region between queries: ``noise``, uniform ids (zoology's default
      ``random_non_queries=True``, Based's Fig. 2), or ``zero``, one fixed id that is never a key (zoology's
      Fig. 2 configs set ``random_non_queries=False``: zeros, keys from ``[1, vocab / 2)``).
    * ``num_examples``: a fixed training set of this many sequences per task, seen again every epoch in
      the same order (zoology's ``num_examples``: 100,000 in Fig. 2); null: an endless stream, every
      training sequence new. Epochs are then ``steps x global_batch / (tasks x num_examples)``. Only the
      training stream is fixed: validation and the ``mqar`` suite draw from streams of their own.
    """

    num_pairs: int | list[int]
    seq_lens: int | list[int] | None = None
    vocab: int | None = None
    power_a: float = 0.01
    answers_in_input: bool = False
    filler: Literal["noise", "zero"] = later_field("noise")
    num_examples: int | None = later_field(None)

    def __post_init__(self):
        self.num_pairs = _as_list(self.num_pairs)
        self.seq_lens = _as_list(self.seq_lens)
        if not self.num_pairs or any(n < 1 for n in self.num_pairs):
            raise ConfigError(
                f"num_pairs must be one or more integers >= 1, got {self.num_pairs}", key="num_pairs"
            )
        if len(set(self.num_pairs)) != len(self.num_pairs):
            raise ConfigError(f"num_pairs lists a value twice: {self.num_pairs}", key="num_pairs")
        if self.seq_lens is not None:
            if not self.seq_lens or any(n < 4 for n in self.seq_lens):
                raise ConfigError(
                    f"seq_lens must be integers >= 4 (or null), got {self.seq_lens}", key="seq_lens"
                )
            if len(set(self.seq_lens)) != len(self.seq_lens):
                raise ConfigError(f"seq_lens lists a value twice: {self.seq_lens}", key="seq_lens")
            for length in self.seq_lens:
                for n in self.num_pairs:
                    if 4 * n > length:
                        raise ConfigError(
                            f"{n} pairs do not fit a {length}-token sequence (needs 4 * num_pairs <= "
                            "seq_len: the pairs, then a query slot of two tokens per key); list that "
                            "combination as a separate mqar corpus",
                            key="num_pairs",
                        )
        if self.vocab is not None and self.vocab < 5:
            raise ConfigError(f"vocab must be >= 5 token ids (or null), got {self.vocab}", key="vocab")
        if not self.power_a > 0:
            raise ConfigError(
                f"power_a must be > 0 (1.0: uniform query gaps), got {self.power_a}", key="power_a"
            )
        if self.num_examples is not None and self.num_examples < 1:
            raise ConfigError(
                f"num_examples must be >= 1 (or null: an endless stream), got {self.num_examples}",
                key="num_examples",
            )


@dataclass
class PasskeyConfig:
    """The synthetic ``passkey`` corpus (:mod:`harness.data.needle`): sequences of the ``passkey`` suite's
    prompt followed by its answer, lengths uniform in [min_len, seq_len], loss on the answer's tokens."""

    digits: int = 5  # digits of the pass key (the test of Mohtashami & Jaggi: 5)
    min_len: int | None = (
        None  # shortest sequence (prompt + answer); default: seq_len / 4, or room for filler
    )

    def __post_init__(self):
        if not 1 <= self.digits <= 12:
            raise ConfigError(f"digits must be 1..12, got {self.digits}", key="digits")
        if self.min_len is not None and self.min_len < 16:
            raise ConfigError(f"min_len must be >= 16 tokens (or null), got {self.min_len}", key="min_len")


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
    # name: mqar only: the synthetic recall task. Left out of the resolved config while null, so that the
    # config hash (run ids, run directories) of every text run is what it was before this field existed.
    mqar: MQARConfig | None = later_field(None)
    # name: passkey only: the synthetic retrieval task (left out while null, as mqar).
    passkey: PasskeyConfig | None = later_field(None)

    def __post_init__(self):
        if not self.name:
            raise ConfigError("a corpus needs a name", key="name")
        if self.name in SYNTHETIC or self.mqar is not None or self.passkey is not None:
            self._check_synthetic()
            return
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
            hint = suggest_corpus(self.name) or (
                MQAR if difflib.get_close_matches(self.name.lower(), [MQAR], cutoff=0.5) else None
            )
            suggestion = f" Did you mean '{hint}'?" if hint else ""
            raise ConfigError(
                f"unknown corpus '{self.name}'.{suggestion} Named corpora: {', '.join(all_corpus_names())}, "
                f"{MQAR} (synthetic); or give hub_path (a Hugging Face dataset), data_files (local files) or "
                "source: local (a pack of that name under the data dir)",
                key="name",
            )
        if self.source == "hub" and self.data_files:
            raise ConfigError("source: hub cannot be used with data_files", key="source")

    @property
    def is_mqar(self) -> bool:
        return self.name == MQAR

    @property
    def is_passkey(self) -> bool:
        return self.name == PASSKEY

    @property
    def kind(self) -> str:
        """``text``, or the synthetic corpus's name."""
        return self.name if self.name in SYNTHETIC else "text"

    def _check_synthetic(self) -> None:
        for name in SYNTHETIC:
            if getattr(self, name) is not None and self.name != name:
                raise ConfigError(
                    f"'{name}' settings belong to a corpus named '{name}', not '{self.name}'", key=name
                )
        if self.name == PASSKEY and self.passkey is None:
            self.passkey = PasskeyConfig()  # every setting has a default
        if self.name == MQAR and self.mqar is None:
            raise ConfigError(
                "the synthetic corpus 'mqar' needs its settings, e.g. mqar: {num_pairs: [8, 32, 64]}",
                key="mqar",
            )
        for key in ("hub_path", "hub_config", "split", "text_field", "streaming", "data_files", "max_tokens"):
            if getattr(self, key) is not None:
                raise ConfigError(f"the synthetic corpus '{self.name}' takes no {key}", key=key)
        if self.source != "auto":
            raise ConfigError(f"the synthetic corpus '{self.name}' takes no source", key="source")


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
        for role in ("train", "validation"):
            kinds = sorted({s.kind for s in getattr(self, role)})
            if len(kinds) > 1:
                raise ConfigError(
                    f"data.{role} mixes {' and '.join(kinds)} corpora; a split is either text, {MQAR} or "
                    f"{PASSKEY}",
                    key=role,
                )
        tok = self.tokenizer
        synthetic = next((s.name for s in self.train if s.kind != "text"), None)
        if synthetic and tok.kind == "bpe" and tok.path is None and not tok.train_corpus:
            raise ConfigError(
                f"a {synthetic} run still builds a text tokenizer (its vocab_size, EOS id and text evals): "
                "name the text it trains on, e.g. tokenizer: {train_corpus: [web]}, or use kind: gpt2 or "
                "path",
                key="tokenizer.train_corpus",
            )
        for name in SYNTHETIC:
            if tok.train_corpus and name in tok.train_corpus:
                raise ConfigError(
                    f"the tokenizer trains on text; '{name}' is a synthetic corpus",
                    key="tokenizer.train_corpus",
                )

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
                    mqar=s.mqar,  # synthetic: the same task, from the held-out stream
                    passkey=s.passkey,
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

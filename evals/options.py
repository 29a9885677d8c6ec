"""The settings of every evaluation suite, declared once, as strict dataclasses.

A sweep's ``eval_options``, ``ablate eval -o SUITE.KEY=VALUE`` and the Python API all go through these
classes (:func:`evals.suites.resolve_options`), so a misspelled or mistyped option fails before any model
is loaded, naming the file, the key and the nearest valid key. The resolved options are written into every
result (``spec``) and hashed (``spec_hash``) without the run-time fields (batch sizes, whether to save
attention maps): a result counts for a sweep's plan only when its hash matches the plan's.

This module imports neither torch nor lm-eval: sweep files are checked against it at ``ablate sweep plan``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from harness.config_errors import ConfigError
from harness.config_schema import later_field, runtime_field

IMDB_TEMPLATE = "Review: {review}\nSentiment:"
ICL_TASKS = ("imdb", "quac", "narrativeqa")
CorpusSource = Literal["auto", "hub", "local"]


def _at_least(owner: object, name: str, minimum: int) -> None:
    value = getattr(owner, name)
    if value is not None and value < minimum:
        raise ConfigError(f"must be >= {minimum}, got {value}", key=name)


@dataclass
class PerplexityOptions:
    """Log-prob per byte on held-out text (evals/perplexity.py)."""

    limit: int = 100  # documents per corpus
    corpora: list[str] = field(default_factory=lambda: ["c4", "books", "code"])  # named corpora
    window: int | None = None  # tokens scored at once; default: the training context
    stride: int | None = None  # window step; default: window // 2 (each token scored once)
    max_doc_bytes: int | None = None  # cut each document to its first N bytes (quick runs on long books)
    source: CorpusSource = "auto"  # corpus resolution: hub on a cluster, local packs offline
    batch_size: int = runtime_field(16)  # windows per forward pass

    def __post_init__(self) -> None:
        for name in ("limit", "window", "stride", "max_doc_bytes", "batch_size"):
            _at_least(self, name, 1)
        if not self.corpora:
            raise ConfigError("no corpora given; e.g. corpora: [c4, books, code]", key="corpora")


@dataclass
class LmEvalOptions:
    """The lm-evaluation-harness suites ``ollm`` and ``ablation`` (evals/lm_eval_suites.py)."""

    limit: int | None = None  # first N documents of each task (and of each MMLU subject); None: all
    offline: bool | None = None  # local benchmark copies (True), the hub (False), or auto (None)
    batch_size: int = runtime_field(8)  # requests per forward pass

    def __post_init__(self) -> None:
        _at_least(self, "limit", 1)
        _at_least(self, "batch_size", 1)


@dataclass
class ImdbPromptOptions:
    """How a few-shot IMDB prompt is laid out and sampled (shared by the ``icl`` and ``attention`` suites).

    The paper publishes neither shots nor template, so both are options, recorded with every result."""

    shots: int | None = None  # demonstrations per prompt; default: as many as fit (up to max_shots)
    max_shots: int = 8
    max_review_tokens: int | None = None  # reviews cut to this; default: room for ~4 shots, at most 400
    template: str = IMDB_TEMPLATE  # must hold {review}
    target_delimiter: str = " "  # between the template and the label word
    separator: str = "\n\n"  # between demonstrations
    labels: list[str] = field(default_factory=lambda: ["Negative", "Positive"])  # [label 0, label 1]
    source: CorpusSource = "auto"  # where the imdb corpus comes from

    def __post_init__(self) -> None:
        _at_least(self, "shots", 0)
        _at_least(self, "max_shots", 0)
        _at_least(self, "max_review_tokens", 1)
        try:
            ok = "{review}" in self.template and self.template.format(review="") is not None
        except (KeyError, IndexError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(
                "the template must contain '{review}' and no other {fields} (write literal braces as "
                f"{{{{ }}}}), got {self.template!r}",
                key="template",
            )
        if len(self.labels) != 2 or len(set(self.labels)) != 2 or not all(self.labels):
            raise ConfigError(
                f"labels must be two different words [negative, positive], got {list(self.labels)}",
                key="labels",
            )

    def prompt_settings_changed(self) -> bool:
        """Whether any prompt setting differs from its default (the user chose the prompt)."""
        default = ImdbPromptOptions()
        return any(getattr(self, f) != getattr(default, f) for f in ImdbPromptOptions.__dataclass_fields__)


@dataclass
class IclOptions(ImdbPromptOptions):
    """In-context learning tasks of Table 6 (evals/icl.py): IMDB in the few-shot format, QuAC, NarrativeQA."""

    limit: int = 500  # IMDB queries, and questions per QA task
    tasks: list[str] = field(default_factory=lambda: list(ICL_TASKS))
    seed: int = 0  # queries and demonstrations are drawn from it
    max_new_tokens: int = 5  # greedy tokens generated per IMDB answer
    qa_max_new_tokens: int = 24
    examples: int = 5  # prompts and generations kept in the result, for reading

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self, "limit", 2)  # one query per label
        _at_least(self, "max_new_tokens", 1)
        _at_least(self, "qa_max_new_tokens", 1)
        _at_least(self, "examples", 0)
        unknown = [t for t in self.tasks if t not in ICL_TASKS]
        if unknown or not self.tasks:
            raise ConfigError(f"unknown task(s) {unknown}; tasks: {', '.join(ICL_TASKS)}", key="tasks")


@dataclass
class InductionOptions:
    """Synthetic in-context probes every architecture can take (evals/probes.py)."""

    limit: int = 128  # sequences per probe
    seed: int = 0
    half_len: int | None = None  # random tokens before the repeat; default: half the context
    num_pairs: int | None = None  # MQAR key-value pairs; default: min(64, context // 8)
    natural_corpus: str | None = "c4"  # held-out text for Olsson's score on natural text; null skips it
    band: int | None = None  # positions averaged around the early/late points; default: context // 64
    token_pool: int | None = None  # draw induction tokens from the first N ids (default: whole vocabulary)
    batch_size: int = runtime_field(16)

    def __post_init__(self) -> None:
        for name in ("limit", "band", "token_pool", "batch_size", "num_pairs"):
            _at_least(self, name, 1)
        _at_least(self, "half_len", 2)


@dataclass
class AttentionOptions(ImdbPromptOptions):
    """Per-head induction, previous-token and label-attention scores (evals/attention.py)."""

    limit: int = 32  # sequences for the induction score, prompts for the label attention
    seed: int = 0
    half_len: int | None = None  # random tokens before the repeat; default: half the context
    batch_size: int = runtime_field(8)
    save_maps: bool = runtime_field(True)  # example attention maps beside the result (for figures)
    # The saved examples are short whatever the context, so maps stay small (full t x t per head):
    example_half_len: int = runtime_field(64)  # random tokens before the repeat (the induction stripe)
    example_review_tokens: int = runtime_field(24)  # review length in the example few-shot prompt

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self, "limit", 1)
        _at_least(self, "half_len", 2)
        _at_least(self, "batch_size", 1)
        _at_least(self, "example_half_len", 2)
        _at_least(self, "example_review_tokens", 1)


@dataclass
class MqarOptions:
    """Recall accuracy of a run trained on synthetic MQAR, per (length, pairs) task (evals/mqar.py)."""

    limit: int = 256  # sequences per task
    seed: int = 0  # the test stream's seed: every arm of a sweep is scored on the same sequences
    num_pairs: list[int] | None = None  # score this grid of key-value pairs (default: the trained tasks)
    seq_lens: list[int] | None = None  # ... at these sequence lengths (default: the trained ones)
    # Or these (seq_len, num_pairs) tasks as listed, e.g. Based's Fig. 2 diagonal [[64, 4], ..., [1024, 256]];
    # lengths past the trained context test extrapolation (refused for learned absolute positions).
    tasks: list[list[int]] | None = later_field(None)
    batch_size: int = runtime_field(32)

    def __post_init__(self) -> None:
        _at_least(self, "limit", 1)
        _at_least(self, "batch_size", 1)
        if self.tasks is not None:
            if self.num_pairs is not None or self.seq_lens is not None:
                raise ConfigError("give tasks, or num_pairs and seq_lens, not both", key="tasks")
            if not self.tasks or any(len(t) != 2 or min(t) < 1 for t in self.tasks):
                raise ConfigError(
                    f"must be a non-empty list of [seq_len, num_pairs] integer pairs >= 1, got {self.tasks}",
                    key="tasks",
                )
        for name in ("num_pairs", "seq_lens"):
            if getattr(self, name) is not None and (not getattr(self, name) or min(getattr(self, name)) < 1):
                raise ConfigError(
                    f"must be a non-empty list of integers >= 1, got {getattr(self, name)}", key=name
                )


RetrievalHaystack = Literal["filler", "text"]


@dataclass
class RetrievalOptions:
    """A needle hidden at a grid of depths in haystacks of a grid of lengths, asked for at the end
    (evals/niah.py): the ``niah`` (Fig. 4) and ``passkey`` suites."""

    lengths: list[int] | None = None  # prompt tokens; default: 1, 2, 4 and 8 x the training context
    depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])  # 0: start, 1: end
    limit: int = 8  # prompts per (length, depth) cell, each with its own needle
    seed: int = 0  # needles (and text offsets) are drawn from it: every arm sees the same prompts
    haystack: RetrievalHaystack = "filler"  # RULER's repeated sentences, or real text from the books corpus
    source: CorpusSource = "auto"  # where the books text comes from (haystack: text)
    digits: int = 7  # digits of the number to retrieve
    batch_size: int = runtime_field(8)  # prompts decoded at once (a cell's prompts have one length)
    prefill_chunk: int | None = runtime_field(None)  # tokens per prefill pass; default: the training context

    def __post_init__(self) -> None:
        for name in ("lengths", "depths"):
            if getattr(self, name) is not None and not getattr(self, name):
                raise ConfigError(f"must be a non-empty list, got {getattr(self, name)}", key=name)
        if self.lengths is not None and min(self.lengths) < 16:
            raise ConfigError(f"lengths must be >= 16 tokens, got {self.lengths}", key="lengths")
        if any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise ConfigError(
                f"depths are fractions of the haystack in [0, 1], got {self.depths}", key="depths"
            )
        for name in ("limit", "batch_size", "prefill_chunk"):
            _at_least(self, name, 1)
        if not 1 <= self.digits <= 12:
            raise ConfigError(f"must be 1..12, got {self.digits}", key="digits")


@dataclass
class NiahOptions(RetrievalOptions):
    """RULER's ``niah_single``: a magic number for a two-word key, in filler or in real text (Fig. 4)."""


@dataclass
class PasskeyOptions(RetrievalOptions):
    """The passkey test (Mohtashami & Jaggi 2023): a 5-digit pass key in repeated filler sentences."""

    digits: int = 5


@dataclass
class PositionLossOptions:
    """Per-token loss by position on long held-out documents, out past the training length
    (evals/position_loss.py)."""

    max_len: int | None = None  # tokens scored per document; default: 8 x the training context
    corpus: str = "books"  # a named corpus with long documents
    limit: int = 8  # documents of at least max_len tokens, the first ones of the held-out split
    bins_per_octave: int = 4  # positions are averaged in log-spaced bins
    source: CorpusSource = "auto"
    chunk: int | None = runtime_field(None)  # tokens per forward pass through the cache; default: the context

    def __post_init__(self) -> None:
        _at_least(self, "max_len", 2)
        for name in ("limit", "bins_per_octave", "chunk"):
            _at_least(self, name, 1)

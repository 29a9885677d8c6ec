"""Multi-query associative recall (MQAR, Arora et al. 2023, "Zoology"): the one generator of the project.

Used three ways: as a training corpus (``data.train: [{name: mqar, mqar: {...}}]``, configured by
:class:`harness.data.config.MQARConfig`, whose docstring defines the task), by ``evals/mqar.py`` (accuracy
per task of an MQAR-trained run, on a stream disjoint from training) and by the ``induction`` suite's probe
(``evals/probes.py``: the same sequences with every slot a query and the answers in the input).

One instance of length ``L`` with ``N`` pairs (``4N <= L``), as zoology's ``multiquery_ar``::

    position   0  1  2  3 ... 2N-2 2N-1 | 2N  2N+1  2N+2 2N+3 ...                L-1
    input      k1 v1 k2 v2 ... kN   vN  | x   x     k2   x    ... k1   x   ...   x
    target     -  -  -  -  ... -    -   | -   -     v2   -    ... v1   -   ...   -

The query region has ``S = (L - 2N) // 2`` two-token slots; the keys go to ``N`` distinct slots, key ``i``
to the ``i``-th slot drawn (without replacement) from ``p(s) ~ (s + 1) ** (power_a - 1)`` (drawn with
Efraimidis-Spirakis keys, equivalent to zoology's successive ``np.random.choice``), so earlier keys tend to
be queried earlier. ``x`` is a uniform noise token (with ``filler: zero``, one fixed id that is never a key,
zoology's Fig. 2; with ``answers_in_input``, the slot's answer after its query). Targets are -100 except at
the queries. Keys are distinct within an instance, and so are values.

Every sample is a pure function of ``(seed, stream, task, index)`` (numpy's legacy ``RandomState``, frozen
across numpy versions, seeded by those words), so any sample is produced in O(1): the loader's global sample
order, rank sharding and exact resume (``harness.data.loader``) carry over unchanged, and streams differ by
their ``stream`` word: 0 train, 1 validation, 2 test (evals), 3 the induction probe.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.config_errors import ConfigError
from harness.data.config import DataConfig, MQARConfig
from harness.data.loader import collate_pairs
from harness.data.mixture import MIX_BLOCK, block_counts, mixture_block, seeded_rng

MQAR_FORMAT = 1  # bump when the sequences a task and index produce change
STREAMS = {"train": 0, "validation": 1, "test": 2, "probe": 3}
IGNORE = -100
_TAG = 0x6D71  # 'mq'


@dataclass(frozen=True)
class MQARTask:
    """One ``(seq_len, num_pairs)`` cell of the mixture, fully resolved (vocab, EOS, gap law)."""

    seq_len: int
    num_pairs: int
    vocab: int
    eos: int
    power_a: float = 0.01
    answers_in_input: bool = False
    filler: str = "noise"
    # The training stream's fixed set (MQARConfig.num_examples): sample j of the train stream is sample
    # j % num_examples. Which samples are drawn, not what a sample is: outside the identity and equality.
    num_examples: int | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return f"L{self.seq_len}_N{self.num_pairs}"

    @property
    def slots(self) -> int:
        return (self.seq_len - 2 * self.num_pairs) // 2

    def identity(self) -> dict:
        return {
            "format": MQAR_FORMAT,
            "seq_len": self.seq_len,
            "num_pairs": self.num_pairs,
            "vocab": self.vocab,
            "eos": self.eos,
            "power_a": self.power_a,
            "answers_in_input": self.answers_in_input,
            # Added later: absent at its default, so the tasks (and samples) of earlier runs are unchanged.
            **({"filler": self.filler} if self.filler != "noise" else {}),
        }

    @property
    def key(self) -> int:
        """A 32-bit word naming the task in every sample's seed (so a task's stream does not depend on
        which other tasks share the mixture)."""
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little")

    def check(self, where: str = "") -> None:
        pool = self.vocab - (0 <= self.eos < self.vocab)  # len(id_pool(vocab, eos)), without building it
        pool -= self.filler == "zero"  # the filler id is never a key
        if self.num_pairs < 1 or 4 * self.num_pairs > self.seq_len:
            raise ConfigError(
                f"{self.num_pairs} pairs do not fit a {self.seq_len}-token sequence (needs 4 * num_pairs <= "
                "seq_len)",
                key=f"{where}num_pairs",
            )
        if self.num_pairs > pool // 2:
            raise ConfigError(
                f"{self.num_pairs} distinct keys need vocab >= {2 * self.num_pairs + 1} ids (keys and values "
                f"each take half), got vocab {self.vocab}",
                key=f"{where}vocab",
            )


@lru_cache(maxsize=16)
def id_pool(vocab: int, eos: int) -> np.ndarray:
    """The ids a task uses: ``[0, vocab)`` without ``eos`` (first half keys, second half values)."""
    ids = np.arange(vocab, dtype=np.int64)
    return ids[ids != eos]


def _distinct(rng: np.random.RandomState, high: int, n: int) -> np.ndarray:
    """``n`` distinct ints in ``[0, high)``, uniformly, in random order (O(n) when n << high)."""
    if 4 * n > high:
        return rng.permutation(high)[:n]
    got = np.empty(0, dtype=np.int64)
    while True:
        cand = np.concatenate([got, rng.randint(0, high, size=2 * n)])
        _, first = np.unique(cand, return_index=True)
        got = cand[np.sort(first)]
        if len(got) >= n:
            return got[:n]


def _slots(rng: np.random.RandomState, space: int, n: int, power_a: float) -> np.ndarray:
    """``n`` distinct slots of ``space`` in draw order, weights ``(s + 1) ** (power_a - 1)``."""
    u = rng.random_sample(space)
    weights = np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1.0)
    with np.errstate(divide="ignore"):
        keys = np.log(u) / weights
    return np.argsort(-keys, kind="stable")[:n]


def example(task: MQARTask, rng: np.random.RandomState, row_len: int | None = None):
    """One instance: ``(inputs, targets)``, int64 arrays of ``row_len`` (default ``task.seq_len``); the
    positions past ``task.seq_len`` are noise with target -100."""
    row_len = task.seq_len if row_len is None else row_len
    n, pool = task.num_pairs, id_pool(task.vocab, task.eos)
    half = len(pool) // 2
    lo = int(task.filler == "zero")  # zoology's zero filler: its id (the pool's first) is never a key
    keys = pool[lo:half][_distinct(rng, half - lo, n)]
    values = pool[half:][_distinct(rng, len(pool) - half, n)]
    qpos = 2 * n + 2 * _slots(rng, task.slots, n, task.power_a)
    if task.filler == "zero":
        inputs = np.full(row_len, pool[0], dtype=np.int64)
    else:
        inputs = pool[rng.randint(0, len(pool), size=row_len)]
    inputs[0 : 2 * n : 2] = keys
    inputs[1 : 2 * n : 2] = values
    inputs[qpos] = keys
    if task.answers_in_input:
        inputs[qpos + 1] = values
    targets = np.full(row_len, IGNORE, dtype=np.int64)
    targets[qpos] = values
    return inputs, targets


def sample_rng(
    seed: int, stream: str, task: MQARTask, index: int, rng: np.random.RandomState | None = None
) -> np.random.RandomState:
    """The generator of one sample: ``seeded_rng(seed, tag, stream, task, index)``'s stream. Pass a
    ``rng`` to reseed it in place (the same stream; building a RandomState costs ~15x more)."""
    if rng is None:
        return seeded_rng(seed, _TAG, STREAMS[stream], task.key, index)
    rng.seed(_words(seed, _TAG, STREAMS[stream], task.key, index))
    return rng


def _words(*words: int) -> np.ndarray:  # seeded_rng's key
    key = []
    for w in words:
        w = int(w)
        key += [w & 0xFFFFFFFF, (w >> 32) & 0xFFFFFFFF]
    return np.array(key, dtype=np.uint32)


def batch(task: MQARTask, n: int, *, seed: int, stream: str, start: int = 0):
    """``n`` instances ``start, start + 1, ...`` of ``stream``: ``(inputs, targets)`` LongTensors (n, L)."""
    rng = np.random.RandomState()
    rows = [example(task, sample_rng(seed, stream, task, start + i, rng)) for i in range(n)]
    return (
        torch.from_numpy(np.stack([r[0] for r in rows])),
        torch.from_numpy(np.stack([r[1] for r in rows])),
    )


def resolve_tasks(
    cfg: MQARConfig, *, seq_len: int, vocab_size: int, eos: int, where: str = ""
) -> list[MQARTask]:
    """The tasks of one ``mqar`` corpus for a run of context ``seq_len`` whose tokenizer has ``vocab_size``
    ids and EOS ``eos``; ConfigError (key ``where`` + field) on what does not fit."""
    vocab = cfg.vocab if cfg.vocab is not None else vocab_size
    if vocab > vocab_size:
        raise ConfigError(
            f"vocab {vocab} exceeds the tokenizer's vocab_size {vocab_size} (ids must stay below it and "
            "below model.vocab_size): lower mqar.vocab or raise data.tokenizer.vocab_size",
            key=f"{where}vocab",
        )
    lengths = cfg.seq_lens or [seq_len]
    for length in lengths:
        if length > seq_len:
            raise ConfigError(
                f"sequence length {length} exceeds the run's train.seq_len {seq_len}", key=f"{where}seq_lens"
            )
    tasks = []
    for length in lengths:
        for n in cfg.num_pairs:
            task = MQARTask(
                length, n, vocab, eos, cfg.power_a, cfg.answers_in_input, cfg.filler, cfg.num_examples
            )
            task.check(where)
            tasks.append(task)
    return tasks


def run_tasks(data_cfg: DataConfig, *, seq_len: int, vocab_size: int, eos: int, role: str = "train"):
    """``[(task, weight)]`` of a config's mqar corpora for ``role`` (weights: the corpus's weight shared
    equally among its grid cells)."""
    specs = data_cfg.corpora(role)
    explicit = role != "train" and bool(data_cfg.validation)
    out: list[tuple[MQARTask, float]] = []
    for i, spec in enumerate(specs):
        if not spec.is_mqar:
            raise ConfigError(f"data.{role} mixes mqar with text corpora", key=f"data.{role}")
        where = f"data.{'validation' if explicit else 'train'}[{i}].mqar."
        tasks = resolve_tasks(spec.mqar, seq_len=seq_len, vocab_size=vocab_size, eos=eos, where=where)
        out += [(t, spec.weight / len(tasks)) for t in tasks]
    seen = set()
    for task, _ in out:
        if task in seen:
            raise ConfigError(f"the mqar task {task.name} is listed twice in data.{role}", key=f"data.{role}")
        seen.add(task)
    return out


class MQARDataset(Dataset):
    """Map-style: global sample index ``k`` -> ``(inputs, targets)`` of ``seq_len`` tokens. The mixture
    over tasks follows :func:`harness.data.mixture.mixture_block` (exact weights every 4096 samples); task
    ``c``'s ``j``-th sample is ``example(task, sample_rng(seed, stream, task, j))`` padded to seq_len."""

    def __init__(self, tasks: list[tuple[MQARTask, float]], seq_len: int, seed: int, stream: str = "train"):
        if not tasks:
            raise ConfigError("no mqar tasks")
        self.tasks = [t for t, _ in tasks]
        self.weights = [float(w) for _, w in tasks]
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.stream = stream
        self.counts = block_counts(self.weights) if len(self.tasks) > 1 else None
        self._blocks: OrderedDict = OrderedDict()
        self._rng = np.random.RandomState()  # reseeded per sample
        self._fixed: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # task -> its fixed training set
        for task in self.tasks:
            if task.seq_len > self.seq_len:
                raise ConfigError(f"mqar task {task.name} is longer than seq_len {self.seq_len}")

    def locate(self, k: int) -> tuple[int, int]:
        """``(task, sample index within the task)`` of global sample ``k``."""
        if k < 0:
            raise IndexError(k)
        if self.counts is None:
            return 0, k
        b, o = divmod(k, MIX_BLOCK)
        hit = self._blocks.get(b)
        if hit is None:
            hit = self._blocks[b] = mixture_block(self.seed, self.counts, b)
            if len(self._blocks) > 4:
                self._blocks.popitem(last=False)
        corpus_at, rank_at = hit
        c = int(corpus_at[o])
        return c, b * int(self.counts[c]) + int(rank_at[o])

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        c, j = self.locate(int(k))
        task = self.tasks[c]
        if self.stream == "train" and task.num_examples:
            # A fixed training set, seen again every epoch in the same order: generated once (the same
            # samples, 0..N-1, that the stream would give) and held as int32 (100,000 x 256 tokens: 200 MB),
            # so an epoch costs no generation (~0.1 ms a sample, which would bound small models' speed).
            if c not in self._fixed:
                rows = [
                    example(task, sample_rng(self.seed, self.stream, task, i, self._rng), self.seq_len)
                    for i in range(task.num_examples)
                ]
                self._fixed[c] = tuple(np.stack([r[n] for r in rows]).astype(np.int32) for n in (0, 1))
            inputs, targets = (a[j % task.num_examples].astype(np.int64) for a in self._fixed[c])
            return torch.from_numpy(inputs), torch.from_numpy(targets)
        inputs, targets = example(task, sample_rng(self.seed, self.stream, task, j, self._rng), self.seq_len)
        return torch.from_numpy(inputs), torch.from_numpy(targets)

    collate = staticmethod(collate_pairs)

    def fingerprint(self) -> str:
        ident = {
            "kind": "mqar",
            "format": MQAR_FORMAT,
            "seq_len": self.seq_len,
            "seed": self.seed,
            "stream": self.stream,
            "block": MIX_BLOCK,
            "tasks": [[t.identity(), w] for t, w in zip(self.tasks, self.weights, strict=True)],
        }
        fixed = [t.num_examples if self.stream == "train" else None for t in self.tasks]
        if any(fixed):  # added later: absent for endless streams, whose fingerprints stay as they were
            ident["num_examples"] = fixed
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        total = sum(self.weights)
        return "\n".join(
            f"mqar {t.name}: {t.num_pairs} pairs in {t.seq_len} tokens (padded to {self.seq_len}), vocab "
            f"{t.vocab}, power_a {t.power_a:g}, filler {t.filler}, share {w / total:.3f}"
            + (f", a fixed set of {t.num_examples:,}" if t.num_examples and self.stream == "train" else "")
            for t, w in zip(self.tasks, self.weights, strict=True)
        )


def build_mqar_dataset(data_cfg: DataConfig, tok, role: str, seq_len: int, seed: int) -> MQARDataset:
    """The dataset of ``role`` ('train' or 'validation': the held-out stream of the same tasks, or the
    explicitly listed validation tasks)."""
    if seq_len < 4:
        raise ConfigError(f"seq_len must be >= 4 for mqar, got {seq_len}")
    tasks = run_tasks(data_cfg, seq_len=seq_len, vocab_size=tok.vocab_size, eos=tok.eos_id, role=role)
    return MQARDataset(tasks, seq_len, seed, stream=role)

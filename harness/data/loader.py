"""The packing loader: fixed-length windows over tokenized corpora, in a seeded, resumable, sharded order.

Each corpus is tokenized once into a flat token array (:mod:`harness.data.tokens`: documents joined as
``doc EOS doc EOS ...``). Corpus ``c`` with ``n`` tokens has ``N_c = (n - 1) // seq_len`` samples; sample
``i`` is the window ``tokens[i*seq_len : i*seq_len + seq_len + 1]`` (inputs are its first ``seq_len``
tokens, targets the last ``seq_len``). Windows cross document boundaries; the EOS separator marks them.

The **global sample sequence** ``k = 0, 1, 2, ...`` is infinite and depends only on the data (the token
arrays and weights), ``seq_len`` and ``seed``, never on the world size, batch size or worker count:

* mixture: ``k`` lies in block ``k // B`` (``B = 4096``); every block holds a fixed count of samples of each
  corpus (its weight share of ``B``, largest-remainder rounding) in an order given by a seeded permutation
  of that block; so every 4096 samples follow the weights exactly, in a random interleaving;
* within corpus ``c``, its ``j``-th sample is sample ``perm_{c,e}[j mod N_c]`` of epoch ``e = j // N_c``, a
  seeded permutation re-drawn every epoch.

Rank ``r`` of ``W`` gets global samples ``start + r, start + r + W, ...``; its step-``s`` batch is the next
``batch_size`` of them, so the union over ranks of step ``s`` is exactly the global batch of a single
process with ``batch_size * W``. The loader position is ``samples_consumed`` (global samples used by all
ranks); ``make_batches(..., start_sample=samples_consumed)`` resumes exactly, in O(1). A map-style dataset
with a resumable sampler means ``num_workers > 0`` yields the same batches as ``num_workers = 0``. All
permutations use numpy's legacy ``RandomState`` (its stream is frozen across numpy versions).

Token caps: local packs and files are tokenized whole unless ``max_tokens`` caps them. A hub corpus is
streamed and tokenized only up to its cap: the spec's ``max_tokens``, else ``DataConfig.max_tokens``, else
what the run needs when ``make_batches`` is told ``num_samples`` (the corpus's share, rounded up to a power
of two so runs of similar length share a cache), else 1e9 tokens (train) / 1e7 (validation), with a
warning. Changing a cap changes the corpus, hence the order: resume with the same settings; ``state_dict``
carries a ``fingerprint`` that ``make_batches(state=...)`` checks.

The synthetic ``mqar`` corpus (:mod:`harness.data.mqar`) keeps this contract (global sample order, rank
sharding, ``samples_consumed``, fingerprint) with samples generated from their index instead of read from a
token array; its batches' targets are -100 except at the answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from harness.config_errors import ConfigError
from harness.data.config import DataConfig
from harness.data.mixture import MIX_BLOCK, block_counts, mixture_block, seeded_rng

log = logging.getLogger("harness.data")

LOADER_FORMAT = 1
DEFAULT_HUB_MAX_TOKENS = {"train": 1_000_000_000, "validation": 10_000_000}


@dataclass(frozen=True)
class CorpusArray:
    name: str
    path: str  # tokens.bin
    dtype: str
    n_tokens: int
    weight: float
    key: str
    describe: str


class PackedDataset(Dataset):
    """Map-style dataset: global sample index ``k`` -> LongTensor window of ``seq_len + 1`` tokens."""

    def __init__(self, corpora: list[CorpusArray], seq_len: int, seed: int):
        if seq_len < 1:
            raise ConfigError(f"seq_len must be >= 1, got {seq_len}")
        self.corpora = list(corpora)
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.n_samples = [(c.n_tokens - 1) // self.seq_len for c in self.corpora]
        for c, n in zip(self.corpora, self.n_samples, strict=True):
            if n < 1:
                raise ConfigError(
                    f"corpus '{c.name}' has {c.n_tokens} tokens: too few for one sample of seq_len {seq_len}"
                )
        self.counts = block_counts([c.weight for c in self.corpora]) if len(self.corpora) > 1 else None
        self._reset_caches()

    def _reset_caches(self):
        self._arrays: list[np.ndarray] | None = None
        self._perms: OrderedDict = OrderedDict()
        self._blocks: OrderedDict = OrderedDict()

    def __getstate__(self):  # memmaps and caches are rebuilt in each worker
        state = self.__dict__.copy()
        state.update(_arrays=None, _perms=OrderedDict(), _blocks=OrderedDict())
        return state

    # -- the global order
    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._blocks.get(b)
        if hit is None:
            hit = mixture_block(self.seed, self.counts, b)
            self._blocks[b] = hit
            if len(self._blocks) > 4:
                self._blocks.popitem(last=False)
        return hit

    def _perm(self, c: int, epoch: int) -> np.ndarray:
        hit = self._perms.get((c, epoch))
        if hit is None:
            hit = seeded_rng(self.seed, 0x7065726D, c, epoch).permutation(self.n_samples[c])
            self._perms[(c, epoch)] = hit
            if len(self._perms) > 2 * len(self.corpora) + 2:
                self._perms.popitem(last=False)
        return hit

    def locate(self, k: int) -> tuple[int, int, int]:
        """``(corpus, epoch, sample index within the corpus)`` of global sample ``k``."""
        if k < 0:
            raise IndexError(k)
        if self.counts is None:
            c, j = 0, k
        else:
            b, o = divmod(k, MIX_BLOCK)
            corpus_at, rank_at = self._block(b)
            c = int(corpus_at[o])
            j = b * int(self.counts[c]) + int(rank_at[o])
        epoch, pos = divmod(j, self.n_samples[c])
        return c, epoch, int(self._perm(c, epoch)[pos])

    def window(self, c: int, i: int) -> np.ndarray:
        if self._arrays is None:
            self._arrays = [
                np.memmap(a.path, dtype=np.dtype(a.dtype), mode="r", shape=(a.n_tokens,))
                for a in self.corpora
            ]
        start = i * self.seq_len
        return np.asarray(self._arrays[c][start : start + self.seq_len + 1], dtype=np.int64)

    def __getitem__(self, k: int) -> torch.Tensor:
        c, _epoch, i = self.locate(int(k))
        return torch.from_numpy(self.window(c, i))

    def fingerprint(self) -> str:
        ident = {
            "format": LOADER_FORMAT,
            "seq_len": self.seq_len,
            "seed": self.seed,
            "block": MIX_BLOCK,
            "corpora": [[c.key, c.n_tokens, c.weight] for c in self.corpora],
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        rows = []
        for c, n in zip(self.corpora, self.n_samples, strict=True):
            rows.append(f"{c.name}: {c.describe}, {c.n_tokens:,} tokens, {n:,} samples, weight {c.weight:g}")
        return "\n".join(rows)


class RankSampler(Sampler[int]):
    """Global sample indices ``start + rank, start + rank + world_size, ...`` (endless, or until ``stop``)."""

    def __init__(self, start: int, rank: int, world_size: int, stop: int | None = None):
        self.start, self.rank, self.world_size, self.stop = int(start), int(rank), int(world_size), stop

    def __iter__(self):
        k = self.start + self.rank
        while self.stop is None or k < self.stop:
            yield k
            k += self.world_size

    def __len__(self):
        if self.stop is None:
            raise TypeError("the sampler is endless")
        return max(0, -(-(self.stop - self.start - self.rank) // self.world_size))


def collate(windows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    x = torch.stack(windows)
    return {"input_ids": x[:, :-1].contiguous(), "targets": x[:, 1:].contiguous()}


def collate_pairs(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The batch of a synthetic dataset whose samples are ``(inputs, targets)`` pairs (mqar, passkey)."""
    return {"input_ids": torch.stack([i for i, _ in items]), "targets": torch.stack([t for _, t in items])}


class BatchIterator:
    """Iterator of ``{"input_ids": LongTensor(B, T), "targets": LongTensor(B, T)}`` with a resumable state."""

    def __init__(
        self, dataset: PackedDataset, loader: DataLoader, *, start_sample, batch_size, rank, world_size, split
    ):
        self.dataset = dataset
        self.loader = loader
        self.samples_consumed = int(start_sample)
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.split = split
        self._it = None

    @property
    def seq_len(self) -> int:
        return self.dataset.seq_len

    @property
    def samples_per_step(self) -> int:
        """Global samples consumed by one step (all ranks)."""
        return self.batch_size * self.world_size

    @property
    def tokens_per_step(self) -> int:
        return self.samples_per_step * self.dataset.seq_len

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._it is None:
            self._it = iter(self.loader)
        batch = next(self._it)
        self.samples_consumed += self.samples_per_step
        return batch

    def state_dict(self) -> dict:
        """Everything needed to resume: pass it as ``make_batches(..., state=...)`` (or its
        ``samples_consumed`` as ``start_sample``)."""
        return {
            "samples_consumed": self.samples_consumed,
            "fingerprint": self.dataset.fingerprint(),
            "seed": self.dataset.seed,
            "seq_len": self.dataset.seq_len,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "split": self.split,
        }

    def close(self):
        """Stop the worker processes (if any)."""
        self._it = None

    def __del__(self):
        self._it = None


def _cap(spec, src, data_cfg: DataConfig, role: str, share: float, num_samples: int | None, seq_len: int):
    if spec.max_tokens is not None:
        return spec.max_tokens
    if data_cfg.max_tokens is not None:
        return data_cfg.max_tokens
    if src.kind != "hub":
        return None
    if num_samples is not None:
        need = int(num_samples * share * 1.02 + 64) * seq_len + seq_len + 1
        return max(1 << 16, 1 << (need - 1).bit_length())
    cap = DEFAULT_HUB_MAX_TOKENS[role]
    log.warning(
        "corpus '%s' streams from the hub with no token cap: tokenizing at most %.0e tokens. Set max_tokens "
        "(corpus or data config) or pass num_samples to make_batches.",
        spec.name,
        cap,
    )
    return cap


def build_dataset(
    data_cfg: DataConfig,
    tok,
    split: str = "train",
    seq_len: int = 256,
    seed: int = 0,
    num_samples: int | None = None,
) -> Dataset:
    """Resolve, tokenize (cached) and index the corpora of ``split``; for a synthetic corpus (``mqar``,
    ``passkey``), its generator's dataset (:mod:`harness.data.mqar`, :mod:`harness.data.needle`: the same
    sample-index contract)."""
    role = "train" if split == "train" else "validation"
    specs = data_cfg.corpora(role)
    if any(s.is_mqar for s in specs):
        from harness.data.mqar import build_mqar_dataset

        return build_mqar_dataset(data_cfg, tok, role, seq_len, seed)
    if any(s.is_passkey for s in specs):
        from harness.data.needle import build_passkey_dataset

        return build_passkey_dataset(data_cfg, tok, role, seq_len, seed)

    from harness.data.sources import resolve
    from harness.data.tokens import tokenize_to_cache

    total = sum(s.weight for s in specs)
    corpora = []
    for spec in specs:
        src = resolve(spec, role, data_cfg)
        cap = _cap(spec, src, data_cfg, role, spec.weight / total, num_samples, seq_len)
        arr = tokenize_to_cache(src, tok, data_cfg.data_dir, cap)
        corpora.append(
            CorpusArray(
                spec.name, arr.bin_path, arr.dtype, arr.n_tokens, spec.weight, arr.key, src.describe()
            )
        )
    return PackedDataset(corpora, seq_len, seed)


def make_batches(
    data_cfg: DataConfig,
    tok,
    split: str = "train",
    seq_len: int = 256,
    batch_size: int = 8,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    start_sample: int = 0,
    num_workers: int = 0,
    *,
    state: dict | None = None,
    num_samples: int | None = None,
    pin_memory: bool = False,
) -> BatchIterator:
    """Endless batches of packed sequences for this rank (see the module docstring for the order).

    ``start_sample``: global samples already consumed (``state_dict()["samples_consumed"]``); or pass the
    whole ``state`` to also check that the data, seq_len and seed match the run being resumed.
    ``num_samples``: global samples the run will consume (caps the tokenization of hub corpora).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"bad rank {rank} / world_size {world_size}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    dataset = build_dataset(data_cfg, tok, split, seq_len, seed, num_samples)
    if state is not None:
        if state.get("fingerprint") not in (None, dataset.fingerprint()):
            raise ConfigError(
                f"cannot resume the data stream: its fingerprint {state['fingerprint']} differs from this "
                f"config's {dataset.fingerprint()} (other corpora, token caps, tokenizer, seq_len or seed)"
            )
        start_sample = int(state["samples_consumed"])
    if start_sample < 0:
        raise ConfigError(f"start_sample must be >= 0, got {start_sample}")
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RankSampler(start_sample, rank, world_size),
        num_workers=num_workers,
        collate_fn=getattr(dataset, "collate", collate),
        pin_memory=pin_memory,
        drop_last=False,
    )
    return BatchIterator(
        dataset,
        loader,
        start_sample=start_sample,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        split=split,
    )

"""The mixture order shared by every training source: seeded blocks of ``MIX_BLOCK`` samples in which each
component (a corpus, or an MQAR task) holds exactly its weight share, in a seeded random interleaving.

Used by the token-array loader (:mod:`harness.data.loader`) and the synthetic MQAR source
(:mod:`harness.data.mqar`), so both keep one global sample order that depends only on the data, the
weights and the seed.
"""

from __future__ import annotations

import numpy as np

MIX_BLOCK = 4096


def seeded_rng(*words: int) -> np.random.RandomState:
    """numpy's legacy generator (its stream is frozen across numpy versions) seeded by 64-bit words."""
    key = []
    for w in words:
        w = int(w)
        key += [w & 0xFFFFFFFF, (w >> 32) & 0xFFFFFFFF]
    return np.random.RandomState(np.array(key, dtype=np.uint32))


def block_counts(weights: list[float], block: int = MIX_BLOCK) -> np.ndarray:
    """Samples of each corpus per mixture block: largest-remainder rounding of the weight shares (>= 1)."""
    w = np.asarray(weights, dtype=np.float64)
    raw = block * w / w.sum()
    counts = np.floor(raw).astype(np.int64)
    rest = block - int(counts.sum())
    order = sorted(range(len(w)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    for i in range(len(w)):
        if counts[i] == 0:
            counts[i] = 1
            counts[int(np.argmax(counts))] -= 1
    return counts


def mixture_block(seed: int, counts: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Mixture block ``b``: the component of each of its ``MIX_BLOCK`` samples (``counts[c]`` of component
    ``c``, in a seeded random order) and each sample's rank among its component's samples in the block."""
    layout = np.repeat(np.arange(len(counts)), counts)
    corpus_at = layout[seeded_rng(seed, 0x6D6978, b).permutation(MIX_BLOCK)]
    rank_at = np.empty(MIX_BLOCK, dtype=np.int64)
    for c in range(len(counts)):
        where = np.flatnonzero(corpus_at == c)
        rank_at[where] = np.arange(where.size)
    return corpus_at, rank_at

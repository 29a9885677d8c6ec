"""Per-token loss by position on long held-out documents, out past the length the run trained on.

Within the training length, loss falls with position: more context, better predictions. Past it, a model
that extrapolates keeps the curve flat or falling; one that does not sees it turn up. This is where arms
differ at small scale (attention without positions, with RoPE, Mamba, the hybrids; pure Mamba's failure to
extrapolate past its training length is among the most asked-about issues on mamba_ssm's tracker).

The first ``limit`` documents of the corpus's held-out split with at least ``max_len`` tokens (after the EOS
that precedes every document in the training stream) are scored on their first ``max_len`` targets. Each is
fed through the model's inference cache ``chunk`` tokens at a time, which is the one-pass result (the cache
carries attention's keys and values and Mamba's state) with the logits of one chunk in memory at once, so
32K-token documents fit. Position p is the target's index: the prediction made from p tokens of context.
Losses are averaged per position over the documents, then in log-spaced bins (``bins_per_octave`` per
doubling). Summary metrics: the mean loss over the last half of the training length (``within``), over the
last half of ``max_len`` (``beyond``), and their difference.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from evals.options import PositionLossOptions
from harness.config_errors import ConfigError
from harness.data.config import CorpusSpec
from harness.data.sources import resolve
from harness.training.loading import LoadedRun

SCANNED = 5_000  # held-out documents looked at for long ones


def long_documents(loaded: LoadedRun, options: PositionLossOptions, max_len: int) -> tuple[list, str]:
    """Token ids (EOS first, ``max_len + 1`` tokens) of the first ``limit`` documents long enough."""
    src = resolve(CorpusSpec(name=options.corpus, source=options.source), "validation", loaded.config.data)
    tok = loaded.tokenizer
    docs, longest = [], 0
    for text in itertools.islice(src.iter_texts(), SCANNED):
        if len(text.encode("utf-8")) < max_len:  # a token holds at least a byte: cannot be long enough
            longest = max(longest, len(text) // 4)
            continue
        ids = [tok.eos_id, *tok.encode(text)]
        longest = max(longest, len(ids) - 1)
        if len(ids) > max_len:
            docs.append(ids[: max_len + 1])
            if len(docs) == options.limit:
                break
    if not docs:
        raise ConfigError(
            f"position_loss: no document of {src.describe()} has {max_len} tokens (the longest of the first "
            f"{SCANNED} has ~{longest}); lower max_len or choose another corpus",
            key="position_loss.max_len",
        )
    return docs, src.describe()


@torch.no_grad()
def position_nll(loaded: LoadedRun, ids: list[int], chunk: int) -> torch.Tensor:
    """Negative log-likelihood (nats) of targets ``ids[1:]`` by position, fed ``chunk`` tokens at a time
    through a fresh inference cache."""
    model = loaded.model
    inputs = torch.tensor([ids[:-1]], device=loaded.device)
    targets = torch.tensor(ids[1:], device=loaded.device)
    cache = model.new_cache(1, inputs.shape[1])
    out = []
    for start in range(0, inputs.shape[1], chunk):
        logits = model(inputs[:, start : start + chunk], cache=cache).logits[0].float()
        out.append(F.cross_entropy(logits, targets[start : start + chunk], reduction="none").cpu())
    return torch.cat(out)


def log_bins(max_len: int, per_octave: int, trained: int | None = None) -> list[tuple[int, int]]:
    """Position ranges [lo, hi) (1-based) with edges at 2^(k / per_octave), each holding a position; with
    ``trained``, an edge after it, so that no bin mixes positions within and beyond the training length."""
    edges = {round(2 ** (k / per_octave)) for k in range(int(math.log2(max_len) * per_octave) + 1)}
    if trained is not None and trained < max_len:
        edges.add(trained + 1)
    edges = sorted(e for e in edges if e < max_len) + [max_len + 1]  # no one-position last bin
    return list(itertools.pairwise(edges))


def run(loaded: LoadedRun, options: PositionLossOptions) -> dict:
    trained = loaded.seq_len
    max_len = options.max_len or 8 * trained
    loaded.check_positions(max_len, "max_len", "position_loss.max_len")
    docs, source = long_documents(loaded, options, max_len)
    chunk = options.chunk or trained
    was_training = loaded.model.training
    loaded.model.eval()
    try:
        per_position = torch.stack([position_nll(loaded, ids, chunk) for ids in docs]).mean(0)
    finally:
        loaded.model.train(was_training)

    def mean(lo: int, hi: int) -> float:  # positions lo..hi inclusive, 1-based
        return float(per_position[lo - 1 : hi].mean())

    bins = [
        {"from": lo, "to": hi - 1, "loss": mean(lo, hi - 1), "beyond_training": lo > trained}
        for lo, hi in log_bins(max_len, options.bins_per_octave, trained)
    ]
    within = mean(trained // 2 + 1, trained)
    beyond = mean(max_len // 2 + 1, max_len)
    return {
        "metrics": {
            "position_loss/within": within,
            "position_loss/beyond": beyond,
            "position_loss/delta": beyond - within,
        },
        "bins": bins,
        "settings": {
            "corpus": options.corpus,
            "source": source,
            "documents": len(docs),
            "max_len": max_len,
            "trained_length": trained,
            "bins_per_octave": options.bins_per_octave,
            "chunk": chunk,
            "loss": "cross-entropy in nats per token; position p predicts token p+1 from p tokens of context",
            "within": f"mean loss at positions {trained // 2 + 1}..{trained}",
            "beyond": f"mean loss at positions {max_len // 2 + 1}..{max_len}",
        },
    }


def summarize(payload: dict) -> list[str]:
    s, m = payload["settings"], payload["metrics"]
    lines = [
        f"position loss on {s['documents']} {s['corpus']} documents to {s['max_len']} tokens "
        f"(trained at {s['trained_length']}):"
    ]
    for b in payload["bins"]:
        mark = "  beyond training" if b["beyond_training"] else ""
        lines.append(f"  {b['from']:>7}-{b['to']:<7} {b['loss']:.3f}{mark}")
    lines.append(
        f"within {m['position_loss/within']:.3f}, beyond {m['position_loss/beyond']:.3f}, "
        f"delta {m['position_loss/delta']:+.3f} nats/token"
    )
    return lines

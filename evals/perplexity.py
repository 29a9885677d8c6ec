"""Per-byte perplexity on held-out corpora: the paper's "log-prob per byte" columns (Tables 4, 5, 7, 8).

The paper reports the mean log-probability per byte (natural log; negative, higher is better: C4 -0.543,
Books -0.659, Code -0.331 for the 1.3B attention model). Per *byte* rather than per token so that models
with different tokenizers compare; we report the same number (``logprob_per_byte``) together with its
positive forms, nats/byte and bits/byte, and tokens/byte (how much the tokenizer compresses).

Corpora are named corpora of :mod:`harness.data.sources`: ``c4``, ``books`` and ``code`` read their hub
validation splits on a cluster and the held-out splits of the local packs offline (``ablate data
prepare``); the payload records which source was read. The first ``limit`` documents of the split are
scored (a fixed prefix of a fixed order, so the number is reproducible).

Each document is tokenized on its own and preceded by the EOS token, which is what precedes every document
in the packed training stream. A document longer than the window is scored with a sliding window: windows
of ``window`` input tokens start every ``stride`` tokens and each target token is scored exactly once, in
the first window that contains it after the previous window's targets, so every token after the first
window sees at least ``window - stride`` tokens of context. Bytes are the UTF-8 bytes of the document text.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evals.options import PerplexityOptions
from harness.config_errors import ConfigError
from harness.data.config import CorpusSpec
from harness.data.sources import resolve
from harness.training.loading import LoadedRun


@dataclass
class Window:
    """One forward pass: ``inputs`` (at most ``window`` tokens) and how many of its last targets count."""

    doc: int
    inputs: list[int]
    targets: list[int]
    n_scored: int


def sliding_windows(ids: list[int], window: int, stride: int, doc: int = 0) -> list[Window]:
    """Windows over ``ids`` (the full sequence, BOS included) that score every target ``ids[1:]`` once.

    Window k feeds ``ids[k*stride : k*stride + window]`` and predicts the token after each input; it
    scores only the targets past the previous window's last target.
    """
    if window < 2 or not 1 <= stride <= window:
        raise ConfigError(f"need window >= 2 and 1 <= stride <= window, got window {window}, stride {stride}")
    n = len(ids) - 1  # targets
    out: list[Window] = []
    begin, done = 0, 0
    while done < n:
        length = min(window, n - begin)
        last = begin + length  # index of the last target this window predicts
        out.append(Window(doc, ids[begin : begin + length], ids[begin + 1 : last + 1], n_scored=last - done))
        done = last
        begin += stride
    return out


@torch.no_grad()
def score_windows(
    model: torch.nn.Module, windows: list[Window], device: torch.device, batch_size: int = 16
) -> list[float]:
    """Sum of target log-probs (nats) per window; windows of unequal length are right-padded and masked."""
    sums = [0.0] * len(windows)
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].inputs))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = len(windows[chunk[0]].inputs)
        inputs = torch.zeros(len(chunk), width, dtype=torch.long)
        targets = torch.full((len(chunk), width), -100, dtype=torch.long)
        for row, i in enumerate(chunk):
            w = windows[i]
            inputs[row, : len(w.inputs)] = torch.tensor(w.inputs)
            first = len(w.targets) - w.n_scored
            targets[row, first : len(w.targets)] = torch.tensor(w.targets[first:])
        logits = model(inputs.to(device)).logits.float()
        nll = F.cross_entropy(
            logits.view(-1, logits.shape[-1]),
            targets.to(device).view(-1),
            ignore_index=-100,
            reduction="none",
        ).view(len(chunk), width)
        for row, i in enumerate(chunk):
            sums[i] = -float(nll[row].sum())
    return sums


def truncate_utf8(text: str, max_bytes: int | None) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes at a character boundary."""
    if max_bytes is None:
        return text
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def score_texts(
    loaded: LoadedRun,
    texts: list[str],
    *,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 16,
) -> dict:
    """Log-prob totals of ``texts`` under the run's model: per-document nats, tokens and bytes, and the
    corpus aggregates (total log-prob over total bytes, i.e. byte-weighted, as per-byte metrics are)."""
    window = window or loaded.seq_len
    stride = stride or max(1, window // 2)
    if window > loaded.seq_len:
        raise ConfigError(
            f"perplexity window {window} exceeds the run's training context {loaded.seq_len}; "
            f"use window <= {loaded.seq_len}"
        )
    eos = loaded.tokenizer.eos_id
    encoded = loaded.tokenizer.encode_batch(texts) if texts else []
    windows: list[Window] = []
    for d, ids in enumerate(encoded):
        if ids:
            windows.extend(sliding_windows([eos, *ids], window, stride, doc=d))
    sums = score_windows(loaded.model, windows, loaded.device, batch_size)
    logprob = [0.0] * len(texts)
    for w, s in zip(windows, sums, strict=True):
        logprob[w.doc] += s
    tokens = sum(len(ids) for ids in encoded)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    total = sum(logprob)
    return {
        "documents": len(texts),
        "bytes": nbytes,
        "tokens": tokens,
        "windows": len(windows),
        "logprob": total,
        "doc_logprobs": logprob,
        "logprob_per_byte": total / nbytes if nbytes else math.nan,
        "nats_per_byte": -total / nbytes if nbytes else math.nan,
        "bits_per_byte": -total / nbytes / math.log(2) if nbytes else math.nan,
        "tokens_per_byte": tokens / nbytes if nbytes else math.nan,
        "nats_per_token": -total / tokens if tokens else math.nan,
    }


def run(loaded: LoadedRun, options: PerplexityOptions) -> dict:
    """Log-prob per byte on the validation split of each corpus (``options.limit`` documents each).

    ``window`` (default: the training context) and ``stride`` (default: window // 2) set the sliding
    window; ``max_doc_bytes`` cuts each document to its first N bytes (for quick runs on long books);
    ``source`` is the corpus resolution (auto/hub/local, see harness.data.sources).
    """
    o = options
    window = o.window or loaded.seq_len
    stride = o.stride or max(1, window // 2)
    results: dict[str, dict] = {}
    metrics: dict[str, float] = {}
    for name in o.corpora:
        src = resolve(CorpusSpec(name=name, source=o.source), "validation", loaded.config.data)
        texts = [truncate_utf8(t, o.max_doc_bytes) for t in itertools.islice(src.iter_texts(), o.limit)]
        scored = score_texts(loaded, texts, window=window, stride=stride, batch_size=o.batch_size)
        scored.pop("doc_logprobs")
        results[name] = {"source": src.describe(), **scored}
        metrics[f"{name}/logprob_per_byte"] = scored["logprob_per_byte"]
        metrics[f"{name}/bits_per_byte"] = scored["bits_per_byte"]
    return {
        "metrics": metrics,
        "corpora": results,
        "settings": {
            "corpora": list(o.corpora),
            "split": "validation (hub) / held-out split (local packs)",
            "documents_per_corpus": o.limit,
            "window": window,
            "stride": stride,
            "batch_size": o.batch_size,
            "max_doc_bytes": o.max_doc_bytes,
            "source": o.source,
            "log_base": "e (logprob_per_byte, nats_per_byte); 2 (bits_per_byte)",
            "document_prefix": "EOS token (as in the packed training stream); not scored",
            "aggregation": "total log-prob / total UTF-8 bytes over the documents",
        },
    }


def summarize(payload: dict) -> list[str]:
    lines = []
    for name, r in payload.get("corpora", {}).items():
        lines.append(
            f"{name:<6} logprob/byte {r['logprob_per_byte']:+.4f}  bits/byte {r['bits_per_byte']:.4f}  "
            f"tokens/byte {r['tokens_per_byte']:.3f}  ({r['documents']} docs, {r['bytes']:,} bytes, "
            f"{r['tokens']:,} tokens; {r['source']})"
        )
    return lines

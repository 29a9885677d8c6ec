"""Synthetic in-context learning probes that every architecture can take, pure Mamba included.

The paper explains the hybrid's IMDB win (Section 6) by induction heads, which pure Mamba lacks. These
probes measure the capability itself, without a prompt format in the way:

* **Induction** (Olsson et al. 2022): a sequence of ``half_len`` uniformly random tokens, then the same
  tokens again. Nothing in the first copy is predictable; every token of the second copy (after its first)
  is, for a model that can look up what followed the current token earlier. Reported: the per-position loss
  curve, the mean loss on each copy and their difference (``repeat_gain``); the loss on the same second
  half after a *different* first half (a control that differs only in whether the answer is in context)
  and its excess over the repeat (``context_gain``); and an "in-context learning score" in Olsson's form,
  loss at a late position minus loss at an early one (their tokens 500 and 50 of a 512 context, scaled to
  this model's context), both on these sequences and on held-out natural text (Olsson's own definition;
  negative = later tokens are easier thanks to the context).
* **Multi-query associative recall** (MQAR, Arora et al. 2023, "Zoology"): ``num_pairs`` key-value pairs,
  then every key again in random order; the model must predict each key's value. Accuracy over the whole
  vocabulary and among the sequence's values (chance 1/num_pairs).

Every sequence starts with the EOS token (as documents do in the packed training stream) and is at most the
training context long. Sequences are drawn from ``seed`` and never include the EOS id. ``limit`` is the
number of sequences per probe.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from evals.mqar import RecallTally
from evals.options import InductionOptions
from harness.config_errors import ConfigError
from harness.data import mqar
from harness.data.config import CorpusSpec
from harness.data.sources import DataUnavailableError, resolve
from harness.training.loading import LoadedRun

OLSSON_CONTEXT, OLSSON_EARLY, OLSSON_LATE = 512, 50, 500


def random_tokens(
    n: int, length: int, vocab: int, exclude: int, generator: torch.Generator, pool: int | None = None
) -> torch.Tensor:
    """(n, length) uniform token ids other than ``exclude`` (the EOS id): from the whole vocabulary, or
    from the first ``pool`` such ids."""
    high = vocab - 1 if pool is None else min(pool, vocab - 1)
    ids = torch.randint(0, high, (n, length), generator=generator)
    return ids + (ids >= exclude).long()


def repeated_sequences(
    n: int, half_len: int, vocab: int, eos: int, seed: int, pool: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Induction sequences and their controls, each (n, 1 + 2 * half_len).

    The sequence is EOS, ``half_len`` random tokens, then the same tokens again; its control has the same
    second half after a different random first half, so the two differ only in whether the answer is in
    context.
    """
    g = torch.Generator().manual_seed(seed)
    x = random_tokens(n, half_len, vocab, eos, g, pool)
    y = random_tokens(n, half_len, vocab, eos, g, pool)
    bos = torch.full((n, 1), eos, dtype=torch.long)
    return torch.cat([bos, x, x], dim=1), torch.cat([bos, y, x], dim=1)


@torch.no_grad()
def token_losses(
    model: torch.nn.Module, seqs: torch.Tensor, device: torch.device, batch_size: int = 16
) -> torch.Tensor:
    """(n, t-1) next-token losses in nats: entry j is the loss of predicting ``seqs[:, j + 1]``."""
    out = []
    for chunk in seqs.split(batch_size):
        chunk = chunk.to(device)
        logits = model(chunk[:, :-1]).logits.float()
        loss = F.cross_entropy(logits.transpose(1, 2), chunk[:, 1:], reduction="none")
        out.append(loss.cpu())
    return torch.cat(out)


def scaled_positions(context: int) -> tuple[int, int]:
    """Olsson's early/late token positions (50 and 500 of 512) scaled to ``context``."""
    early = max(1, round(OLSSON_EARLY * context / OLSSON_CONTEXT))
    late = min(context - 1, round(OLSSON_LATE * context / OLSSON_CONTEXT))
    return early, late


def band_mean(curve: torch.Tensor, position: int, band: int) -> float:
    """Mean of a per-target-position curve (index 0 = target position 1) over ``position`` +- ``band``."""
    lo, hi = max(1, position - band), min(len(curve), position + band)
    return float(curve[lo - 1 : hi].mean())


def induction_probe(
    loaded: LoadedRun,
    *,
    n: int,
    seed: int,
    half_len: int | None,
    batch_size: int,
    band: int,
    token_pool: int | None = None,
) -> dict:
    """Loss on the repeated copy vs the first copy of random-token sequences, and vs a control whose first
    half differs."""
    context = loaded.seq_len
    half_len = half_len or (context - 1) // 2
    if not 2 <= half_len <= (context - 1) // 2:
        raise ConfigError(
            f"induction: half_len must be in [2, {(context - 1) // 2}] for a {context}-token context, "
            f"got {half_len}"
        )
    if token_pool is not None and token_pool < 2:
        raise ConfigError(f"induction: token_pool must be >= 2 token ids (or null for all), got {token_pool}")
    tok = loaded.tokenizer
    seqs, controls = repeated_sequences(n, half_len, tok.vocab_size, tok.eos_id, seed, token_pool)
    losses = token_losses(loaded.model, seqs, loaded.device, batch_size)  # (n, 2 * half_len)
    control = token_losses(loaded.model, controls, loaded.device, batch_size)[:, half_len + 1 :].mean()
    curve = losses.mean(0)  # index j: target position j + 1; first copy 1..half_len, second after
    first = losses[:, 1:half_len].mean()  # targets 2..half_len: the first copy after its first token
    second = losses[:, half_len + 1 :].mean()  # targets half_len+2..: copyable from the first copy
    early, late = scaled_positions(2 * half_len + 1)
    pool = min(token_pool or tok.vocab_size, tok.vocab_size - 1)
    return {
        "sequences": n,
        "half_len": half_len,
        "token_pool": pool,
        "loss_first_half": float(first),
        "loss_second_half": float(second),
        "loss_second_half_control": float(control),
        "repeat_gain": float(first - second),
        "context_gain": float(control - second),
        "icl_score": band_mean(curve, late, band) - band_mean(curve, early, band),
        "positions": {"early": early, "late": late, "band": band},
        "uniform_loss": math.log(pool),
        "loss_curve": [round(float(v), 4) for v in curve],
    }


def natural_windows(loaded: LoadedRun, corpus: str, n: int) -> torch.Tensor:
    """(<= n, seq_len + 1) windows cut from the held-out stream of ``corpus`` (documents each followed by
    EOS, as in training), starting with an EOS so that position 0 is a document boundary."""
    src = resolve(CorpusSpec(name=corpus), "validation", loaded.config.data)
    eos, width = loaded.tokenizer.eos_id, loaded.seq_len
    stream: list[int] = [eos]
    windows: list[list[int]] = []
    texts = src.iter_texts()
    while len(windows) < n:
        batch = list(itertools.islice(texts, 64))
        if not batch:
            break
        for ids in loaded.tokenizer.encode_batch(batch):
            stream.extend([*ids, eos])
        while len(stream) >= width + 1 and len(windows) < n:
            windows.append(stream[: width + 1])
            stream = stream[width + 1 :]
    return torch.tensor(windows, dtype=torch.long).view(-1, width + 1)


def natural_icl_score(loaded: LoadedRun, *, corpus: str, n: int, batch_size: int, band: int) -> dict:
    """Olsson's in-context learning score on held-out text: loss at the late position minus the early."""
    try:
        windows = natural_windows(loaded, corpus, n)
    except DataUnavailableError as e:
        return {"status": "unavailable", "reason": str(e)}
    if len(windows) == 0:
        return {"status": "unavailable", "reason": f"corpus {corpus} has no held-out text"}
    curve = token_losses(loaded.model, windows, loaded.device, batch_size).mean(0)
    early, late = scaled_positions(loaded.seq_len)
    return {
        "status": "ok",
        "corpus": corpus,
        "windows": len(windows),
        "loss_early": band_mean(curve, early, band),
        "loss_late": band_mean(curve, late, band),
        "icl_score": band_mean(curve, late, band) - band_mean(curve, early, band),
        "positions": {"early": early, "late": late, "band": band},
    }


def mqar_sequences(
    n: int, num_pairs: int, vocab: int, eos: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MQAR sequences ``EOS k1 v1 ... kN vN  q1 a1 ... qN aN`` (queries: the keys in random order).

    The training generator's instances (:mod:`harness.data.mqar`) with every query slot used (length
    ``4 * num_pairs``), a uniform query order and the answers in the input, after an EOS: keys from the lower
    half of the vocabulary and values from the upper half (EOS in neither), each distinct within a sequence.
    Returns the sequences (n, 1 + 4 * num_pairs), the positions of the queries (whose next token is the
    answer) and each sequence's values (n, num_pairs).
    """
    task = mqar.MQARTask(4 * num_pairs, num_pairs, vocab, eos, power_a=1.0, answers_in_input=True)
    inputs, _ = mqar.batch(task, n, seed=seed, stream="probe")
    seqs = torch.cat([torch.full((n, 1), eos, dtype=torch.long), inputs], dim=1)
    query_positions = 1 + 2 * num_pairs + 2 * torch.arange(num_pairs)
    return seqs, query_positions, seqs[:, 2 : 2 * num_pairs + 1 : 2].clone()


@torch.no_grad()
def mqar_probe(loaded: LoadedRun, *, n: int, seed: int, num_pairs: int | None, batch_size: int) -> dict:
    """Accuracy of predicting each queried key's value."""
    context = loaded.seq_len
    num_pairs = num_pairs or min(64, context // 8)
    vocab = loaded.tokenizer.vocab_size
    if not 1 <= num_pairs <= (context - 1) // 4 or num_pairs > vocab // 2 - 2:
        raise ConfigError(
            f"mqar: num_pairs must be in [1, {(context - 1) // 4}] for a {context}-token context, "
            f"got {num_pairs}"
        )
    seqs, qpos, values = mqar_sequences(n, num_pairs, vocab, loaded.tokenizer.eos_id, seed + 1)
    tally = RecallTally()
    for rows in torch.arange(n).split(batch_size):
        batch = seqs[rows].to(loaded.device)
        logits = loaded.model(batch).logits.float()[:, qpos]  # (b, num_pairs, vocab)
        tally.add(logits, batch[:, qpos + 1], values[rows].to(loaded.device))
    return tally.result(n, num_pairs)


def run(loaded: LoadedRun, options: InductionOptions) -> dict:
    """The ``induction`` suite: induction probe, natural-text ICL score and MQAR (see the module docstring).

    ``band`` averages the early/late losses over +-band positions (default context // 64) so that the
    score is stable with a hundred sequences; ``natural_corpus: null`` skips the natural-text score;
    ``token_pool`` draws the induction tokens from the first N ids instead of the whole vocabulary.
    """
    o = options
    n, seed, batch_size = o.limit, o.seed, o.batch_size
    band = o.band if o.band is not None else max(1, loaded.seq_len // 64)
    induction = induction_probe(
        loaded, n=n, seed=seed, half_len=o.half_len, batch_size=batch_size, band=band, token_pool=o.token_pool
    )
    natural = (
        natural_icl_score(loaded, corpus=o.natural_corpus, n=n, batch_size=batch_size, band=band)
        if o.natural_corpus
        else {"status": "skipped"}
    )
    mqar = mqar_probe(loaded, n=n, seed=seed, num_pairs=o.num_pairs, batch_size=batch_size)
    metrics = {
        "induction/loss_first_half": induction["loss_first_half"],
        "induction/loss_second_half": induction["loss_second_half"],
        "induction/repeat_gain": induction["repeat_gain"],
        "induction/context_gain": induction["context_gain"],
        "induction/icl_score": induction["icl_score"],
        "mqar/accuracy": mqar["accuracy"],
        "mqar/accuracy_among_values": mqar["accuracy_among_values"],
    }
    if natural.get("status") == "ok":
        metrics["natural/icl_score"] = natural["icl_score"]
    return {
        "metrics": metrics,
        "induction": induction,
        "natural_text": natural,
        "mqar": mqar,
        "settings": {
            "sequences": n,
            "seed": seed,
            "half_len": induction["half_len"],
            "token_pool": o.token_pool,
            "num_pairs": mqar["num_pairs"],
            "natural_corpus": o.natural_corpus,
            "band": band,
            "context": loaded.seq_len,
            "losses": "nats, next-token cross-entropy",
        },
    }


def summarize(payload: dict) -> list[str]:
    ind, mq, nat = payload["induction"], payload["mqar"], payload["natural_text"]
    lines = [
        f"induction  loss first copy {ind['loss_first_half']:.3f}  second {ind['loss_second_half']:.3f}  "
        f"control {ind['loss_second_half_control']:.3f}  context gain {ind['context_gain']:+.3f}  "
        f"icl score {ind['icl_score']:+.3f} ({ind['sequences']} seqs)",
        f"mqar       accuracy {mq['accuracy']:.3f}  among values {mq['accuracy_among_values']:.3f} "
        f"(chance {mq['chance_among_values']:.3f}, {mq['num_pairs']} pairs)",
    ]
    if nat.get("status") == "ok":
        lines.append(
            f"natural    icl score {nat['icl_score']:+.3f} on {nat['corpus']} "
            f"(loss {nat['loss_early']:.3f} at {nat['positions']['early']} -> {nat['loss_late']:.3f} "
            f"at {nat['positions']['late']})"
        )
    else:
        lines.append(f"natural    {nat.get('status')}: {nat.get('reason', '')}")
    return lines

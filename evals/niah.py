"""Needle in a haystack (the paper's Fig. 4) and the passkey test: can a run retrieve one fact from a long
context, as a function of the context's length and of where in it the fact sits?

The prompts (RULER's ``niah_single`` and the passkey test, in filler or, for niah, held-out book text) are
assembled by :mod:`harness.data.needle` to an exact length with the needle at a depth of the haystack. Answers
are greedy continuations through the static-cache :class:`~harness.model.decode.Decoder` (the prompt
prefilled in chunks, so a long context fits); a prompt counts as retrieved when the number appears in the
continuation (RULER's string match). Every arm sees the very same prompts for a given ``seed``; the cells
past the run's training length test extrapolation.
"""

from __future__ import annotations

import itertools
import random

import torch

from evals.options import RetrievalOptions
from harness.config_errors import ConfigError
from harness.data.config import CorpusSpec
from harness.data.needle import (
    ADJECTIVES,
    FILLER,
    NOUNS,
    TASKS,
    NeedleTask,
    Prompt,
    build_prompt,
    sentences,
)
from harness.data.sources import resolve
from harness.model.decode import Decoder
from harness.training.loading import LoadedRun


def haystack_sentences(loaded: LoadedRun, options: RetrievalOptions, needed_tokens: int) -> list[str]:
    """The haystack's sentences in order: the filler's, or the books' (enough for ``needed_tokens``)."""
    if options.haystack == "filler":
        return sentences(FILLER)
    src = resolve(CorpusSpec(name="books", source=options.source), "validation", loaded.config.data)
    out: list[str] = []
    words = 0
    for text in itertools.islice(src.iter_texts(), 10_000):
        out.extend(sentences(text))
        words += len(text.split())
        if words > needed_tokens * 2:  # a word is at most a few tokens; room for the seed's offset
            return out
    raise ConfigError(
        f"haystack 'text': the books corpus ({src.describe()}) holds ~{words} words, too few for prompts of "
        f"{needed_tokens} tokens; use haystack: filler or shorter lengths"
    )


def default_lengths(loaded: LoadedRun) -> list[int]:
    return [loaded.seq_len * f for f in (1, 2, 4, 8)]


def prompts_for(
    loaded: LoadedRun, task: NeedleTask, options: RetrievalOptions
) -> dict[tuple[int, float], list]:
    """The prompts of every (length, depth) cell: ``options.limit`` each, drawn from ``options.seed``."""
    lengths = options.lengths or default_lengths(loaded)
    haystack = haystack_sentences(loaded, options, max(lengths))
    rng = random.Random(f"{task.name}-{options.seed}")
    encode = loaded.tokenizer.encode
    cells: dict[tuple[int, float], list[Prompt]] = {}
    for length in lengths:
        for depth in options.depths:
            cells[(length, depth)] = [
                build_prompt(
                    encode,
                    task,
                    haystack,
                    length,
                    depth,
                    key=f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}" if task.keyed else "",
                    value=str(rng.randrange(10 ** (options.digits - 1), 10**options.digits)),
                    offset=rng.randrange(len(haystack)),
                )
                for _ in range(options.limit)
            ]
    return cells


@torch.no_grad()
def answer(
    loaded: LoadedRun, prompts: list[Prompt], batch_size: int, chunk: int, new_tokens: int
) -> list[str]:
    """Greedy continuations of equal-length prompts, decoded to text."""
    model, tok = loaded.model, loaded.tokenizer
    length = len(prompts[0].ids)
    out: list[str] = []
    decoders: dict[int, Decoder] = {}  # by batch size: the last group may be smaller
    for start in range(0, len(prompts), batch_size):
        group = prompts[start : start + batch_size]
        if len(group) not in decoders:
            decoders[len(group)] = Decoder(model, batch=len(group), max_len=length + new_tokens)
        ids = torch.tensor([p.ids for p in group], device=loaded.device)
        new = decoders[len(group)].generate(ids, new_tokens, chunk=chunk)
        out += [tok.decode(r) for r in new.tolist()]
    return out


def run_task(loaded: LoadedRun, task: NeedleTask, options: RetrievalOptions) -> dict:
    lengths = options.lengths or default_lengths(loaded)
    loaded.check_positions(max(lengths), "length", f"{task.name}.lengths")
    cells = prompts_for(loaded, task, options)
    chunk = options.prefill_chunk or loaded.seq_len
    new_tokens = len(loaded.tokenizer.encode(" " + "9" * options.digits)) + 4
    was_training = loaded.model.training
    loaded.model.eval()
    rows, examples = [], []
    try:
        for (length, depth), prompts in cells.items():
            outputs = answer(loaded, prompts, options.batch_size, chunk, new_tokens)
            hits = [p.value in o for p, o in zip(prompts, outputs, strict=True)]
            rows.append(
                {
                    "length": length,
                    "depth": depth,
                    "depth_used": sum(p.depth for p in prompts) / len(prompts),
                    "samples": len(prompts),
                    "accuracy": sum(hits) / len(hits),
                    "beyond_training": length > loaded.seq_len,
                }
            )
            if len(examples) < 3:
                p, o = prompts[0], outputs[0]
                examples.append(
                    {"length": length, "depth": depth, "value": p.value, "key": p.key, "output": o}
                )
    finally:
        loaded.model.train(was_training)
    metrics = {f"{task.name}/accuracy": sum(r["accuracy"] for r in rows) / len(rows)}
    for length in lengths:
        accs = [r["accuracy"] for r in rows if r["length"] == length]
        metrics[f"{task.name}/accuracy@{length}"] = sum(accs) / len(accs)
    return {
        "metrics": metrics,
        "cells": rows,
        "examples": examples,
        "settings": {
            "task": task.name,
            "lengths": lengths,
            "depths": list(options.depths),
            "samples_per_cell": options.limit,
            "seed": options.seed,
            "haystack": options.haystack if task.name == "niah" else "filler",
            "digits": options.digits,
            "trained_length": loaded.seq_len,
            "new_tokens": new_tokens,
            "prefill_chunk": chunk,
            "templates": {"intro": task.intro, "needle": task.needle, "question": task.question},
            "accuracy": "the number appears in the greedy continuation (RULER's string match)",
        },
    }


def run_niah(loaded: LoadedRun, options: RetrievalOptions) -> dict:
    return run_task(loaded, TASKS["niah"], options)


def run_passkey(loaded: LoadedRun, options: RetrievalOptions) -> dict:
    if options.haystack != "filler":
        raise ConfigError("passkey hides its key in filler only; use the niah suite for a text haystack")
    return run_task(loaded, TASKS["passkey"], options)


def summarize(payload: dict) -> list[str]:
    s = payload["settings"]
    depths = s["depths"]
    lines = [
        f"{s['task']}: accuracy by length (rows) and depth (columns {', '.join(f'{d:g}' for d in depths)})"
    ]
    for length in s["lengths"]:
        accs = [r["accuracy"] for r in payload["cells"] if r["length"] == length]
        mark = " (beyond training)" if length > s["trained_length"] else ""
        lines.append(f"  {length:>7}  " + "  ".join(f"{a:4.2f}" for a in accs) + mark)
    lines.append(f"{s['task']} mean accuracy {payload['metrics'][s['task'] + '/accuracy']:.3f}")
    return lines

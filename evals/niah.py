"""Needle in a haystack (the paper's Fig. 4) and the passkey test: can a run retrieve one fact from a long
context, as a function of the context's length and of where in it the fact sits?

``niah`` follows RULER's ``niah_single`` (Hsieh et al. 2024): a needle "One of the special magic numbers for
{key} is: {value}." (a two-word key, a 7-digit number) is inserted at a *depth* (0: the start of the
haystack, 1: its end) into a haystack of RULER's repeated filler sentences (``haystack: filler``) or of real
text from the held-out books (``haystack: text``), and the question at the end asks for the key's number.
``passkey`` is the test of Mohtashami & Jaggi (2023): "The pass key is {value}. Remember it. {value} is the
pass key." in the same filler, "What is the pass key?" at the end.

A prompt is assembled from token ids so that its length is exact: the instruction, the haystack cut to the
tokens left over, the question. The needle goes in at the sentence boundary of the haystack nearest to
``depth x haystack tokens`` (depth 0 and 1 are the haystack's very start and end); the depth actually used
is recorded. Answers are greedy continuations through the static-cache :class:`~harness.model.decode.Decoder`
(the prompt prefilled in chunks, so a long context fits); a prompt counts as retrieved when the number appears
in the continuation (RULER's string match). Every arm sees the very same prompts for a given ``seed``.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass

import torch

from evals.options import RetrievalOptions
from harness.config_errors import ConfigError
from harness.data.config import CorpusSpec
from harness.data.sources import resolve
from harness.model.decode import Decoder
from harness.training.loading import LoadedRun

# RULER's "noise" haystack (also the passkey test's filler).
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."


@dataclass(frozen=True)
class NeedleTask:
    """The wording of one retrieval task (RULER's niah templates; the passkey test's)."""

    name: str
    intro: str
    needle: str  # {key} and {value}
    question: str  # {key}
    keyed: bool  # whether each needle has its own key


TASKS = {
    "niah": NeedleTask(
        "niah",
        "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the numbers afterwards.",
        "One of the special magic numbers for {key} is: {value}.",
        "What is the special magic number for {key} mentioned in the provided text? "
        "The special magic number for {key} mentioned in the provided text is",
        keyed=True,
    ),
    "passkey": NeedleTask(
        "passkey",
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
        "I will quiz you about the important information there.",
        "The pass key is {value}. Remember it. {value} is the pass key.",
        "What is the pass key? The pass key is",
        keyed=False,
    ),
}

# Keys as RULER draws them (an adjective and a noun); a fixed list keeps prompts reproducible offline.
ADJECTIVES = (
    "ancient brave calm damp eager fancy gentle hollow icy jolly keen lively mellow noisy odd polite quick "
    "rapid silent tidy uneven vast wise young zealous bitter clever dusty fierce grumpy"
).split()
NOUNS = (
    "anchor basket candle desert engine falcon garden harbor island jacket kettle ladder meadow needle "
    "orchard pencil quarry river saddle tunnel umbrella valley wagon yacht zipper bridge castle dolphin "
    "feather glacier"
).split()


@dataclass
class Prompt:
    ids: list[int]
    value: str
    key: str
    needle_start: int  # token index of the needle's first token in ``ids``
    depth: float  # where the needle went: its haystack offset over the haystack's tokens


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s]


def haystack_sentences(loaded: LoadedRun, options: RetrievalOptions, needed_tokens: int) -> list[str]:
    """The haystack's sentences in order: the filler's, or the books' (enough for ``needed_tokens``)."""
    if options.haystack == "filler":
        return _sentences(FILLER)
    src = resolve(CorpusSpec(name="books", source=options.source), "validation", loaded.config.data)
    out: list[str] = []
    words = 0
    for text in itertools.islice(src.iter_texts(), 10_000):
        out.extend(_sentences(text))
        words += len(text.split())
        if words > needed_tokens * 2:  # a word is at most a few tokens; room for the seed's offset
            return out
    raise ConfigError(
        f"haystack 'text': the books corpus ({src.describe()}) holds ~{words} words, too few for prompts of "
        f"{needed_tokens} tokens; use haystack: filler or shorter lengths"
    )


def build_prompt(
    encode,
    task: NeedleTask,
    sentences: list[str],
    length: int,
    depth: float,
    key: str,
    value: str,
    offset: int,
) -> Prompt:
    """A prompt of exactly ``length`` tokens (see the module docstring); ``offset`` is the haystack's first
    sentence (cycling through ``sentences``)."""
    prefix = encode(task.intro + "\n")
    needle = encode(" " + task.needle.format(key=key, value=value))
    suffix = encode("\n" + task.question.format(key=key))
    room = length - len(prefix) - len(needle) - len(suffix)
    if room < 1:
        raise ConfigError(
            f"a {task.name} prompt of {length} tokens has no room for a haystack (the instruction, needle "
            f"and question take {length - room}); use longer lengths",
            key="lengths",
        )
    hay: list[int] = []
    bounds = [0]  # token offsets at which a sentence starts
    for i in itertools.count(offset):
        hay += encode(" " + sentences[i % len(sentences)])
        if len(hay) >= room:
            break
        bounds.append(len(hay))
    hay = hay[:room]
    bounds.append(room)
    at = min(bounds, key=lambda b: (abs(b - depth * room), b))
    return Prompt(prefix + hay[:at] + needle + hay[at:] + suffix, value, key, len(prefix) + at, at / room)


def default_lengths(loaded: LoadedRun) -> list[int]:
    return [loaded.seq_len * f for f in (1, 2, 4, 8)]


def check_lengths(loaded: LoadedRun, lengths: list[int], suite: str) -> None:
    rows = loaded.model.cfg.attention.learned_positions
    if rows and max(lengths) > rows:
        raise ConfigError(
            f"{suite}: length {max(lengths)} is past the model's {rows} learned positions "
            f"(attention.learned_positions); use lengths <= {rows}",
            key=f"{suite}.lengths",
        )


def prompts_for(
    loaded: LoadedRun, task: NeedleTask, options: RetrievalOptions
) -> dict[tuple[int, float], list]:
    """The prompts of every (length, depth) cell: ``options.limit`` each, drawn from ``options.seed``."""
    lengths = options.lengths or default_lengths(loaded)
    sentences = haystack_sentences(loaded, options, max(lengths))
    rng = random.Random(f"{task.name}-{options.seed}")
    encode = loaded.tokenizer.encode
    cells: dict[tuple[int, float], list[Prompt]] = {}
    for length in lengths:
        for depth in options.depths:
            cells[(length, depth)] = [
                build_prompt(
                    encode,
                    task,
                    sentences,
                    length,
                    depth,
                    key=f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}" if task.keyed else "",
                    value=str(rng.randrange(10 ** (options.digits - 1), 10**options.digits)),
                    offset=rng.randrange(len(sentences)),
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
        decoder = decoders[len(group)]
        decoder.reset()
        logits = decoder.prefill(torch.tensor([p.ids for p in group], device=loaded.device), chunk=chunk)
        new = []
        for i in range(new_tokens):
            token = logits.argmax(-1)
            new.append(token)
            if i + 1 < new_tokens:
                logits = decoder.step(token)
        out += [tok.decode(r) for r in torch.stack(new, dim=1).tolist()]
    return out


def run_task(loaded: LoadedRun, task: NeedleTask, options: RetrievalOptions) -> dict:
    lengths = options.lengths or default_lengths(loaded)
    check_lengths(loaded, lengths, task.name)
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

"""Needle-in-a-haystack prompts, and the passkey task as a synthetic training corpus.

The prompts of the ``niah`` and ``passkey`` evaluation suites (``evals/niah.py``) are assembled here, from
token ids, so that a prompt's length is exact: the task's instruction, a haystack cut to the tokens left
over, the question. The needle goes in at the haystack's sentence boundary nearest to ``depth x haystack
tokens`` (depth 0 and 1: the haystack's very start and end). ``niah`` is RULER's ``niah_single`` (Hsieh et
al. 2024): "One of the special magic numbers for {key} is: {value}." with a two-word key; ``passkey`` is the
test of Mohtashami & Jaggi (2023): "The pass key is {value}. Remember it. {value} is the pass key.", both in
RULER's repeated filler sentences (or, for niah, real text).

The same passkey prompts, followed by their answer, are a training corpus (``data.train: [{name: passkey,
passkey: {...}}]``, :class:`harness.data.config.PasskeyConfig`): a mini model can learn to retrieve at a short
length and be tested far beyond it. Sample ``k`` of a stream is a pure function of ``(seed, stream, k)``: a
prompt length uniform in ``[min_len, seq_len]`` (prompt and answer), a depth uniform in [0, 1], a random
number of ``digits`` digits and a first filler sentence; the sequence is padded with EOS to ``seq_len`` and
only the answer's tokens are targets (the loss is the retrieval, not the filler). Streams: 0 train,
1 validation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import Dataset

from harness.config_errors import ConfigError
from harness.data.config import DataConfig, PasskeyConfig
from harness.data.loader import collate_pairs
from harness.data.mixture import seeded_rng

PASSKEY_FORMAT = 1  # bump when the sequences an index produces change
STREAMS = {"train": 0, "validation": 1}
IGNORE = -100
_TAG = 0x706B  # 'pk'

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


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s]


def build_prompt(
    encode,
    task: NeedleTask,
    haystack: list[str],
    length: int,
    depth: float,
    key: str,
    value: str,
    offset: int,
) -> Prompt:
    """A prompt of exactly ``length`` tokens (see the module docstring); ``offset`` is the haystack's first
    sentence (cycling through ``sentences``). ``encode`` is the tokenizer's (text -> ids)."""
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
        hay += encode(" " + haystack[i % len(haystack)])
        if len(hay) >= room:
            break
        bounds.append(len(hay))
    hay = hay[:room]
    bounds.append(room)
    at = min(bounds, key=lambda b: (abs(b - depth * room), b))
    return Prompt(prefix + hay[:at] + needle + hay[at:] + suffix, value, key, len(prefix) + at, at / room)


class PasskeyDataset(Dataset):
    """Map-style: global sample index ``k`` -> ``(inputs, targets)`` of ``seq_len`` tokens (see the module
    docstring); the loader's order, rank sharding and exact resume apply unchanged."""

    def __init__(self, config: PasskeyConfig, tok, seq_len: int, seed: int, stream: str = "train"):
        self.config = config
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.stream = stream
        self.eos = tok.eos_id
        self.tokenizer_hash = tok.hash
        self._encode_text = tok.encode
        self._cache: dict[str, list[int]] = {}  # the instruction, question and filler sentences
        self.haystack = sentences(FILLER)
        task, value = TASKS["passkey"], "9" * config.digits
        fixed = sum(
            len(self._encode(t))
            for t in (
                task.intro + "\n",
                " " + task.needle.format(value=value),
                "\n" + task.question,
                " " + value,
            )
        )
        # Default: a quarter of seq_len, and at least the fixed text with 16 tokens of filler.
        self.min_len = config.min_len or min(self.seq_len, max(self.seq_len // 4, fixed + 16))
        if self.min_len > self.seq_len:
            raise ConfigError(
                f"passkey.min_len {self.min_len} exceeds train.seq_len {self.seq_len}", key="passkey.min_len"
            )
        self._prompt(self.min_len, 0.5, value, 0)  # the shortest sequence must hold some filler: else say so

    def _encode(self, text: str) -> list[int]:
        """The tokenizer's ids, memoised for the fixed pieces (instruction, question, filler sentences)."""
        hit = self._cache.get(text)
        if hit is None:
            hit = self._encode_text(text)
            if len(self._cache) < 64:  # needles (with their numbers) are not worth keeping
                self._cache[text] = hit
        return hit

    def _prompt(self, length: int, depth: float, value: str, offset: int) -> Prompt:
        """A prompt that, followed by its answer, is ``length`` tokens."""
        room = length - len(self._encode(" " + value))
        try:
            return build_prompt(self._encode, TASKS["passkey"], self.haystack, room, depth, "", value, offset)
        except ConfigError:
            raise ConfigError(
                f"a passkey sequence of {length} tokens has no room for filler; raise passkey.min_len (or "
                "train.seq_len)",
                key="passkey.min_len",
            ) from None

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = seeded_rng(self.seed, _TAG, STREAMS[self.stream], int(k))
        length = int(rng.randint(self.min_len, self.seq_len + 1))
        depth = float(rng.random_sample())
        digits = self.config.digits
        value = str(int(rng.randint(10 ** (digits - 1), 10**digits)))
        offset = int(rng.randint(len(self.haystack)))
        prompt = self._prompt(length, depth, value, offset)
        answer = self._encode(" " + value)
        seq = prompt.ids + answer + [self.eos] * (self.seq_len + 1 - length)
        inputs = torch.tensor(seq[: self.seq_len])
        targets = torch.full((self.seq_len,), IGNORE)
        start = (
            len(prompt.ids) - 1
        )  # position i predicts token i + 1: the answer's first token at len(prompt)
        targets[start : start + len(answer)] = torch.tensor(answer)
        return inputs, targets

    collate = staticmethod(collate_pairs)

    def fingerprint(self) -> str:
        ident = {
            "kind": "passkey",
            "format": PASSKEY_FORMAT,
            "config": asdict(self.config),
            "seq_len": self.seq_len,
            "seed": self.seed,
            "stream": self.stream,
            "tokenizer": self.tokenizer_hash,
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> str:
        return (
            f"passkey: a {self.config.digits}-digit key in filler, prompts of {self.min_len}-{self.seq_len} "
            f"tokens (EOS-padded to {self.seq_len}), loss on the answer only, stream {self.stream}"
        )


def build_passkey_dataset(data_cfg: DataConfig, tok, role: str, seq_len: int, seed: int) -> PasskeyDataset:
    """The dataset of ``role`` ('train', or 'validation': the same task on its own stream)."""
    specs = [s for s in data_cfg.corpora(role) if s.is_passkey]
    if len(specs) != 1:
        raise ConfigError(f"data.{role} needs exactly one passkey corpus, got {len(specs)}", key=role)
    return PasskeyDataset(specs[0].passkey, tok, seq_len, seed, stream=role)

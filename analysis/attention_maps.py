"""The attention suite's example maps (``evals/attention_maps.npz``) with the IMDB prompt's tokens decoded
and the demonstrations' label tokens located: what the Fig. 7 view draws; and the maps of its first
repeated-random-token sequence (the induction stripe).

The suite stores, for the first few-shot IMDB prompt, the token ids (``imdb_tokens``, position 0 is the
EOS that starts every document) and per attention block the (heads, t, t) probabilities
(``imdb_block<b>``); likewise ``induction_tokens`` and ``induction_block<b>`` for EOS + x + x. The run's
own tokenizer (``tokenizer/``) turns ids into text pieces; label tokens are those overlapping a label word
that follows the template's answer cue (``"\\nSentiment:" + " "``), with the template, delimiter and labels
read from the result's settings, so a changed prompt format still works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAPS_FILE = "attention_maps.npz"


@dataclass
class PromptMaps:
    pieces: list[str]  # text of each input position (position 0: the EOS token)
    label_positions: list[int]
    maps: dict[int, np.ndarray]  # attention block -> (heads, t, t)

    @property
    def final(self) -> int:
        """The last position: the answer cue's ':' that the paper's Fig. 7 attends from."""
        return len(self.pieces) - 1


def label_spans(text: str, template: str, delimiter: str, labels: list[str]) -> list[tuple[int, int]]:
    """Character spans of the label words that answer a demonstration in ``text``."""
    cue = template.split("{review}")[-1] + delimiter
    words = "|".join(re.escape(label) for label in labels)
    return [m.span(1) for m in re.finditer(re.escape(cue) + f"({words})", text)]


def token_positions(pieces: list[str], spans: list[tuple[int, int]]) -> list[int]:
    """Input positions whose text piece overlaps any span (pieces[0], the EOS, has no text)."""
    out, start = [], 0
    for pos, piece in enumerate(pieces[1:], 1):
        end = start + len(piece)
        if any(start < hi and end > lo for lo, hi in spans):
            out.append(pos)
        start = end
    return out


@dataclass
class SequenceMaps:
    """The first sequence of the prefix-matching score: EOS, ``half_len`` random tokens, the same again."""

    pieces: list[str]
    maps: dict[int, np.ndarray]  # attention block -> (heads, t, t)
    half_len: int

    @property
    def repeat_start(self) -> int:
        """The first position of the second copy."""
        return 1 + self.half_len


def _read(path: Path, prefix: str) -> tuple[list[int], dict[int, np.ndarray]] | None:
    with np.load(path) as data:
        if f"{prefix}_tokens" not in data:
            return None
        ids = data[f"{prefix}_tokens"].tolist()
        block = f"{prefix}_block"
        maps = {int(k[len(block) :]): data[k].astype(np.float32) for k in data if k.startswith(block)}
    return ids, maps


def _pieces(run_dir: Path, ids: list[int]) -> list[str]:
    from harness.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(run_dir / "tokenizer")
    return ["<eos>"] + [tokenizer.decode([i]) for i in ids[1:]]


def load_prompt_maps(
    run_dir: str | Path, settings: dict, maps_file: str | Path | None = None
) -> PromptMaps | None:
    """The IMDB prompt's maps of a run, or None when the run has none (no maps file, or no IMDB prompt).

    ``maps_file``: where the maps are when not in the run (a result written with ``ablate eval --out``);
    the tokens are always decoded with the run's own tokenizer."""
    run_dir = Path(run_dir)
    path = Path(maps_file) if maps_file else run_dir / "evals" / MAPS_FILE
    if not path.is_file() or not settings.get("template"):
        return None
    found = _read(path, "imdb")
    if found is None:
        return None
    ids, maps = found
    pieces = _pieces(run_dir, ids)
    spans = label_spans(
        "".join(pieces[1:]), settings["template"], settings["target_delimiter"], settings["labels"]
    )
    return PromptMaps(pieces, token_positions(pieces, spans), maps)


def load_sequence_maps(run_dir: str | Path, maps_file: str | Path | None = None) -> SequenceMaps | None:
    """The repeated-random-token sequence's maps of a run (``induction_*`` in the maps file), or None."""
    run_dir = Path(run_dir)
    path = Path(maps_file) if maps_file else run_dir / "evals" / MAPS_FILE
    if not path.is_file():
        return None
    found = _read(path, "induction")
    if found is None:
        return None
    ids, maps = found
    return SequenceMaps(_pieces(run_dir, ids), maps, (len(ids) - 1) // 2)

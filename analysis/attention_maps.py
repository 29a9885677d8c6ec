"""The attention suite's example maps (``evals/attention_maps.npz``) with the IMDB prompt's tokens decoded
and the demonstrations' label tokens located: what the Fig. 7 view draws.

The suite stores, for the first few-shot IMDB prompt, the token ids (``imdb_tokens``, position 0 is the
EOS that starts every document) and per attention block the (heads, t, t) probabilities
(``imdb_block<b>``). The run's own tokenizer (``tokenizer/``) turns ids into text pieces; label tokens are
those overlapping a label word that follows the template's answer cue (``"\\nSentiment:" + " "``), with the
template, delimiter and labels read from the result's settings, so a changed prompt format still works.
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


def load_prompt_maps(run_dir: str | Path, settings: dict) -> PromptMaps | None:
    """The IMDB prompt's maps of a run, or None when the run has none (no maps file, or no IMDB prompt)."""
    from harness.data.tokenizer import load_tokenizer

    run_dir = Path(run_dir)
    path = run_dir / "evals" / MAPS_FILE
    if not path.is_file() or not settings.get("template"):
        return None
    with np.load(path) as data:
        if "imdb_tokens" not in data:
            return None
        ids = data["imdb_tokens"].tolist()
        maps = {
            int(k[len("imdb_block") :]): data[k].astype(np.float32)
            for k in data
            if k.startswith("imdb_block")
        }
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    pieces = ["<eos>"] + [tokenizer.decode([i]) for i in ids[1:]]
    spans = label_spans(
        "".join(pieces[1:]), settings["template"], settings["target_delimiter"], settings["labels"]
    )
    return PromptMaps(pieces, token_positions(pieces, spans), maps)

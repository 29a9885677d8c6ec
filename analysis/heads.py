"""The attention heads of a set of runs, gathered for the attention-heads notebook: per arm with attention
layers, its per-head scores (induction, previous token, label attention), the few-shot IMDB prompt's maps
and the repeated-random-token sequence's maps.

An arm is shown by its first run (first seed) that has attention layers. Its attention result is the run's
own ``evals/attention.json`` (with ``attention_maps.npz`` beside it) or, for a run evaluated without the
attention suite, one written elsewhere by ``ablate eval RUN --suite attention --out SCRATCH/<run>/...``
(:func:`scratch_result`; the notebook does this through ``evals.runner.run_suite``, never into the run).
Nothing here loads a model: this module only reads result files, like the rest of ``analysis``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.attention_maps import PromptMaps, SequenceMaps, load_prompt_maps, load_sequence_maps
from analysis.fig_icl import SCORES, top_heads
from analysis.frames import KEYS, Frames, load_frames
from analysis.paper import load_paper
from analysis.report import compare_entries, display_names
from analysis.results import head_rows
from analysis.runs import RunInfo

RESULT = "attention.json"


@dataclass
class ArmHeads:
    """One arm's attention heads: its scores and example maps, from one run."""

    label: str  # unique among the arms shown (the run's arm label, else its name or directory)
    name: str  # what figures call it (the paper's row name where the sweep declares one)
    run: RunInfo
    result: Path  # the attention.json read
    payload: dict
    heads: pd.DataFrame  # one row per head: KEYS, block, layer, head and the scores
    prompt: PromptMaps | None  # the first few-shot IMDB prompt (None without the imdb corpus)
    sequence: SequenceMaps | None  # the first EOS + x + x sequence

    def top(self, k: int = 4, by: str | None = None) -> list[tuple[int, int, int]]:
        """(block, layer, head) of the ``k`` best heads by score ``by`` (default: label attention, else
        induction)."""
        return top_heads(self.heads, k, by)

    @property
    def slug(self) -> str:
        """The label as a file-name part."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.label).strip("-") or "run"


@dataclass
class HeadStudy:
    """The arms with attention layers of a set of runs, and why the other runs are not shown."""

    arms: dict[str, ArmHeads]
    skipped: dict[str, str] = field(default_factory=dict)  # run label -> reason
    frames: Frames | None = None  # tidy frames of the shown runs (runs frame relabelled like ``arms``)

    def top(self, k: int = 4, by: str | None = None) -> dict[str, list[tuple[int, int, int]]]:
        """Each arm's ``k`` best heads (see :meth:`ArmHeads.top`)."""
        return {label: arm.top(k, by) for label, arm in self.arms.items()}

    def outlined(self, k: int = 4, by: str | None = None) -> dict[str, list[tuple[int, int]]]:
        """(layer, head) of each arm's ``k`` best heads: what the heatmaps outline."""
        return {label: [(layer, h) for _, layer, h in heads] for label, heads in self.top(k, by).items()}

    @property
    def names(self) -> dict[str, str]:
        return {label: arm.name for label, arm in self.arms.items()}

    @property
    def heads(self) -> pd.DataFrame:
        return pd.concat([arm.heads for arm in self.arms.values()], ignore_index=True)

    @property
    def prompts(self) -> dict[str, PromptMaps]:
        return {label: arm.prompt for label, arm in self.arms.items() if arm.prompt is not None}

    @property
    def sequences(self) -> dict[str, SequenceMaps]:
        return {label: arm.sequence for label, arm in self.arms.items() if arm.sequence is not None}


def has_attention(run: RunInfo) -> bool:
    return isinstance(run.pattern, str) and "*" in run.pattern


def scratch_result(run: RunInfo, scratch: str | Path) -> Path:
    """Where an attention result of ``run`` computed outside its directory goes: ``scratch/<run dir>/``."""
    return Path(scratch) / run.path.name / RESULT


def find_result(run: RunInfo, scratch: str | Path | None = None) -> Path | None:
    """The run's own attention result, else one in ``scratch``, else None."""
    for path in (run.path / "evals" / RESULT, scratch_result(run, scratch) if scratch else None):
        if path is not None and path.is_file():
            return path
    return None


def _unique_labels(runs: list[RunInfo]) -> list[str]:
    """Each run's arm label (else its name or directory); runs that share a label and a seed are different
    runs (e.g. two run directories of ``ablate train``) and get their directory name added."""
    base = [run.label or run.name or run.path.name for run in runs]
    pairs = [(label, run.seed) for label, run in zip(base, runs, strict=True)]
    return [
        label if pairs.count(pair) == 1 else f"{label} ({run.path.name})"
        for label, pair, run in zip(base, pairs, runs, strict=True)
    ]


def shown_runs(runs: list[RunInfo]) -> tuple[list[RunInfo], dict[str, str]]:
    """Per arm label with attention layers, its run with the lowest seed, and why each other run is left
    out; arms in the order they first appear."""
    labels = _unique_labels(runs)
    first = {label: i for i, label in reversed(list(enumerate(labels)))}
    order = sorted(range(len(runs)), key=lambda i: (first[labels[i]], runs[i].seed or 0))
    shown, skipped, seen = [], {}, set()
    for i in order:
        run, label = runs[i], labels[i]
        if not has_attention(run):
            skipped[label] = f"no attention layers (pattern {run.pattern})"
        elif label in seen:
            skipped[f"{label} seed {run.seed}"] = "another seed of an arm shown (the lowest seed is shown)"
        elif run.state == "not launched":
            skipped[label] = "not launched"
        else:
            seen.add(label)
            shown.append(run)
    return shown, skipped


def missing_results(runs: list[RunInfo], scratch: str | Path | None = None) -> list[RunInfo]:
    """The runs to show that have no attention result yet (neither in the run nor in ``scratch``) and have
    a checkpoint to score."""
    return [
        run
        for run in shown_runs(runs)[0]
        if find_result(run, scratch) is None and any((run.path / "checkpoints").glob("step_*"))
    ]


def load_head_study(runs: list[RunInfo], scratch: str | Path | None = None) -> HeadStudy:
    """Every arm with attention layers among ``runs``, with its scores and maps (see the module doc)."""
    shown, skipped = shown_runs(runs)
    labels = dict(zip(map(id, runs), _unique_labels(runs), strict=True))
    compares = compare_entries("", runs, load_paper()) if any(r.compare for r in runs) else []
    arms_of = {labels[id(r)]: r.arm for r in shown}
    names = display_names(list(arms_of), arms_of, compares)
    arms: dict[str, ArmHeads] = {}
    for run in shown:
        label = labels[id(run)]
        path = find_result(run, scratch)
        if path is None:
            skipped[label] = (
                "no attention result (run the attention suite, or let the notebook score it)"
                if any((run.path / "checkpoints").glob("step_*"))
                else f"no attention result and no checkpoint to score ({run.state})"
            )
            continue
        payload = json.loads(path.read_text())
        if payload.get("status") != "ok":
            skipped[label] = f"attention result: {payload.get('status')} ({payload.get('reason')})"
            continue
        keys = {"run_id": run.run_id, "sweep": run.sweep, "arm": run.arm, "label": label, "seed": run.seed}
        heads = pd.DataFrame([{**keys, **row} for row in head_rows(payload)])
        heads = heads[list(KEYS) + [c for c in heads.columns if c not in KEYS]]
        maps = path.with_name(payload.get("maps_file") or f"{path.stem}_maps.npz")
        settings = (payload.get("settings") or {}).get("imdb") or {}
        arms[label] = ArmHeads(
            label=label,
            name=names[label],
            run=run,
            result=path,
            payload=payload,
            heads=heads,
            prompt=load_prompt_maps(run.path, settings, maps),
            sequence=load_sequence_maps(run.path, maps),
        )
    frames = None
    if arms:
        frames = load_frames([arm.run for arm in arms.values()])
        frames.runs["label"] = list(arms)
    return HeadStudy(arms, skipped, frames)


def top_heads_table(study: HeadStudy, k: int = 4) -> pd.DataFrame:
    """Per arm, its ``k`` best heads by each score (rank, layer, head and all three scores)."""
    rows = []
    for arm in study.arms.values():
        for score, title in SCORES:
            if arm.heads[score].isna().all():
                continue
            for rank, (block, layer, head) in enumerate(arm.top(k, by=score), 1):
                row = arm.heads[(arm.heads["block"] == block) & (arm.heads["head"] == head)].iloc[0]
                rows.append(
                    {
                        "arm": arm.name,
                        "ranked by": title,
                        "rank": rank,
                        "layer": layer,
                        "head": head,
                        **{s: row[s] for s, _ in SCORES},
                        "label_attention_lift": row["label_attention_lift"],
                    }
                )
    return pd.DataFrame(rows)

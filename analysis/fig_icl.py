"""Figures of in-context learning: the paper's Fig. 7 (attention to labels, per-head scores), the Table 6
companion (IMDB's three scores and off-format answers), the induction probe's per-position loss, and the
recall accuracy of runs trained on MQAR (Table 6's mechanism).

Inputs are the tidy frames (analysis.frames), the measures frame (analysis.measure) and, for the token
view, :class:`analysis.attention_maps.PromptMaps`; ``names`` maps arm labels to display names, in order.
Highlighted things carry a ``gid`` (``label-tokens``, ``top-head``) so tests and notebooks can find them.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from analysis.attention_maps import PromptMaps
from analysis.measure import arm_estimate
from analysis.style import HIGHLIGHT, MUTED, empty_panel, figure, looks, style

SCORES = (
    ("induction_score", "induction (prefix matching)"),
    ("previous_token_score", "previous token"),
    ("label_attention", "label attention from ':'"),
)


def top_heads(heads: pd.DataFrame, k: int = 4, by: str | None = None) -> list[tuple[int, int, int]]:
    """(block, layer, head) of the ``k`` heads of one run with the highest score ``by`` (one of
    :data:`SCORES`); by default the most attention from ':' to the labels (by induction score when the run
    has no label scores)."""
    key = by or ("label_attention" if heads["label_attention"].notna().any() else "induction_score")
    best = heads.sort_values(key, ascending=False, kind="stable").head(k)
    return [(int(r.block), int(r.layer), int(r.head)) for r in best.itertuples()]


def attention_to_labels(
    prompts: dict[str, PromptMaps], heads: pd.DataFrame, names: dict[str, str], k: int = 4
) -> Figure:
    """Fig. 7's view: for each arm's top heads, attention from the final ':' of a few-shot IMDB prompt to
    every earlier token, label tokens highlighted (one row of panels per arm). ``heads`` holds the per-head
    scores of the runs whose maps ``prompts`` has (one run per arm)."""
    arms = [label for label in names if label in prompts]
    with style():
        if not arms:
            fig = figure(height=1.5)
            empty_panel(fig.add_subplot(), "no IMDB attention maps (attention suite without the imdb pack)")
            return fig
        fig = figure(height=1.9 * len(arms) + 0.3)
        axes = fig.subplots(len(arms), k, squeeze=False, sharey="row")
        for i, label in enumerate(arms):
            view = prompts[label]
            run_heads = heads[heads["label"] == label]
            chosen = top_heads(run_heads, k)
            positions = np.arange(view.final + 1)
            is_label = np.isin(positions, view.label_positions)
            for j in range(k):
                ax = axes[i, j]
                if j >= len(chosen):
                    empty_panel(ax, "")
                    continue
                block, layer, head = chosen[j]
                weights = view.maps[block][head, view.final, : view.final + 1]
                ax.bar(positions[~is_label], weights[~is_label], width=1.0, color=MUTED, label="other tokens")
                bars = ax.bar(
                    positions[is_label], weights[is_label], width=1.0, color=HIGHLIGHT, label="label tokens"
                )
                for bar in bars:
                    bar.set_gid("label-tokens")
                ax.set_gid(f"layer{layer}-head{head}")
                row = run_heads[(run_heads["block"] == block) & (run_heads["head"] == head)].iloc[0]
                lift = f" (x{row.label_attention_lift:.1f})" if pd.notna(row.label_attention_lift) else ""
                mass = f"label mass {row.label_attention:.2f}" if pd.notna(row.label_attention) else ""
                ax.set_title(f"layer {layer}, head {head}\n{mass}{lift}")
                ax.set_xlabel("prompt position (tokens)")
                ax.grid(False)
            axes[i, 0].set_ylabel(f"{names[label]}\nattention from final ':'")
        labels_shown = ", ".join(
            repr(prompts[arms[0]].pieces[p]) for p in prompts[arms[0]].label_positions[:4]
        )
        fig.suptitle(
            f"attention from the answer cue ':' to the prompt; highlighted: label tokens "
            f"({labels_shown}, ...)"
        )
        axes[0, 0].legend(frameon=False, loc="upper left")
    return fig


def head_heatmaps(
    heads: pd.DataFrame,
    runs: pd.DataFrame,
    names: dict[str, str],
    highlight: dict[str, list[tuple[int, int]]],
) -> Figure:
    """Per-layer x per-head induction, previous-token and label-attention scores, one column per arm
    (first seed); ``highlight`` outlines heads (arm label -> [(layer, head)]), e.g. Fig. 7's top heads."""
    arms = list(names)
    with style():
        fig = figure(width=max(3.0, 2.0 * len(arms)), height=5.2)
        axes = fig.subplots(len(SCORES), len(arms), squeeze=False)
        for j, label in enumerate(arms):
            mine = heads[heads["label"] == label]
            pattern = (
                runs.loc[runs["label"] == label, "pattern"].iloc[0] if (runs["label"] == label).any() else ""
            )
            for i, (score, title) in enumerate(SCORES):
                ax = axes[i, j]
                if mine.empty:
                    no_attention = isinstance(pattern, str) and "*" not in pattern
                    empty_panel(ax, "no attention layers" if no_attention else "no attention result")
                    continue
                first = mine[mine["run_id"] == mine["run_id"].iloc[0]]
                grid = first.pivot(index="layer", columns="head", values=score)
                if grid.isna().all().all():
                    empty_panel(ax, f"no {title} scores")
                    continue
                values = grid.to_numpy(float)
                ax.imshow(values, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
                for (r, c), v in np.ndenumerate(values):
                    ax.text(
                        c,
                        r,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=5,
                        color="white" if v > 0.5 else "black",
                    )
                for layer, head in highlight.get(label, []):
                    if layer in grid.index and head in grid.columns:
                        r, c = list(grid.index).index(layer), list(grid.columns).index(head)
                        box = Rectangle(
                            (c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=HIGHLIGHT, linewidth=1.5
                        )
                        box.set_gid("top-head")
                        ax.add_patch(box)
                ax.set_yticks(range(len(grid.index)), [f"layer {layer}" for layer in grid.index])
                ax.set_xticks(range(len(grid.columns)), [str(h) for h in grid.columns])
                ax.set_xlabel("head")
                ax.grid(False)
                ax.set_title(f"{names[label]}\n{title}" if i == 0 else title)
        fig.suptitle("per-head attention scores (0 to 1); outlined: the heads of the Fig. 7 view")
    return fig


ICL_METRICS = (
    ("imdb_loglik", "log-likelihood accuracy", ""),
    ("imdb_format", "format adherence", "///"),
    ("imdb", "generation accuracy", "..."),
)


def imdb_companion(measures: pd.DataFrame, off_format: pd.DataFrame, names: dict[str, str]) -> Figure:
    """IMDB few-shot: log-likelihood accuracy, format adherence and generation accuracy per arm (mean over
    seeds; error bars: seed std, else binomial standard error) and each arm's most frequent off-format
    answers."""
    arms = list(names)
    with style():
        fig = figure(height=3.6)
        ax, notes = fig.subplots(2, 1, height_ratios=[3, 1])
        width = 0.8 / len(ICL_METRICS)
        for k, (metric, title, hatch) in enumerate(ICL_METRICS):
            xs, ys, errs = [], [], []
            for i, label in enumerate(arms):
                est, _, _ = arm_estimate(
                    measures[(measures["label"] == label) & (measures["metric"] == metric)]
                )
                if est is not None:
                    xs.append(i + (k - 1) * width)
                    ys.append(est.mean)
                    errs.append(est.std if est.std is not None else (est.se or 0.0))
            shade = ("0.15", "0.55", "0.85")[k]
            ax.bar(
                xs,
                ys,
                width=width,
                yerr=errs,
                color=shade,
                edgecolor="black",
                hatch=hatch,
                capsize=2,
                linewidth=0.6,
                label=title,
            )
        ax.axhline(50, color="0.4", linestyle=":", linewidth=0.8, label="chance (accuracy)")
        ax.set_xticks(range(len(arms)), [names[a] for a in arms])
        ax.set_ylabel("% of IMDB queries")
        ax.set_ylim(0, 105)
        ax.legend(frameon=False, ncols=4, loc="upper center", bbox_to_anchor=(0.5, 1.18))
        lines = []
        for label in arms:
            answers = off_format[off_format["label"] == label]
            answers = (
                answers.groupby("answer", sort=False)["count"].sum().sort_values(ascending=False).head(3)
            )
            shown = ", ".join(f"'{a}' x{c}" for a, c in answers.items()) or "none"
            lines.append(f"{names[label]}: {shown}")
        empty_panel(notes, "most frequent off-format answers\n" + "\n".join(lines))
    return fig


def induction_curve(curve: pd.DataFrame, names: dict[str, str]) -> Figure:
    """Loss per position on EOS + random tokens + the same tokens again (mean over seeds): a model that
    learns in context drops after the repeat starts."""
    arm_look = looks(list(names))
    with style():
        fig = figure(height=3.0)
        ax = fig.add_subplot()
        if curve.empty:
            empty_panel(ax, "no induction results")
            return fig
        for label, name in names.items():
            mine = curve[curve["label"] == label]
            if mine.empty:
                continue
            mean = mine.groupby("position")["loss"].mean()
            look = arm_look[label]
            ax.plot(mean.index, mean.to_numpy(), color=look.color, linestyle=look.linestyle, label=name)
        half = int(curve["half_len"].iloc[0])
        ax.axvline(half + 0.5, color="0.3", linewidth=0.8, linestyle="--")
        ax.text(half + 1, ax.get_ylim()[1], " repeat starts", va="top", fontsize=7, color="0.3")
        uniform = curve["uniform_loss"].iloc[0]
        if pd.notna(uniform):
            ax.axhline(uniform, color="0.5", linewidth=0.8, linestyle=":", label="uniform guess (log pool)")
        ax.set_xlabel("position in the sequence (tokens)")
        ax.set_ylabel("loss (nats/token)")
        ax.legend(frameon=False)
    return fig


MQAR_TASK = re.compile(r"^L(\d+)_N(\d+)$")


def mqar_recall(evals: pd.DataFrame, names: dict[str, str]) -> Figure:
    """Zoology's view of runs trained on MQAR (the mqar suite): recall accuracy against the number of
    key-value pairs, one panel per sequence length, one line per arm (mean over seeds; error bars: seed std,
    or the binomial s.e. of one seed's queries)."""
    rows = evals[(evals["suite"] == "mqar") & (evals["metric"] == "accuracy")]
    parsed = rows["task"].str.extract(MQAR_TASK).astype(float)
    rows = rows.assign(seq_len=parsed[0], num_pairs=parsed[1]).dropna(subset=["seq_len", "value"])
    arm_look = looks(list(names))
    with style():
        lengths = sorted(rows["seq_len"].unique().astype(int))
        fig = figure(height=2.8)
        if not lengths:
            empty_panel(fig.add_subplot(), "no mqar results")
            return fig
        axes = fig.subplots(1, len(lengths), squeeze=False, sharey=True)[0]
        for ax, length in zip(axes, lengths, strict=True):
            here = rows[rows["seq_len"] == length]
            for label, name in names.items():
                mine = here[here["label"] == label]
                if mine.empty:
                    continue
                by = mine.groupby("num_pairs")
                mean, std = by["value"].mean(), by["value"].std()
                err = std.where(by["value"].count() > 1, by["stderr"].first()).fillna(0.0)
                look = arm_look[label]
                ax.errorbar(
                    mean.index,
                    100 * mean.to_numpy(),
                    yerr=100 * err.to_numpy(),
                    color=look.color,
                    linestyle=look.linestyle,
                    marker=look.marker,
                    markersize=4,
                    capsize=2,
                    label=name,
                )
            pairs = sorted(here["num_pairs"].unique().astype(int))
            ax.set_xscale("log", base=2)
            ax.set_xticks(pairs, [str(p) for p in pairs])
            ax.minorticks_off()
            ax.set_title(f"sequence length {length}")
            ax.set_xlabel("key-value pairs")
            ax.set_ylim(-3, 103)
        axes[0].set_ylabel("recall accuracy (%)")
        axes[-1].legend(frameon=False, fontsize=7)
    return fig

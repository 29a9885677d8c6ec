"""Long-context figures: retrieval by context length x needle depth (the paper's Fig. 4, from the niah and
passkey suites) and loss by position past the training length (the position_loss suite).

Both read the flat ``evals`` frame (analysis.results names the cells ``L<length>_D<depth>`` and the bins
``P<from>_<to>``); seeds of an arm are averaged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.style import empty_panel, figure, looks, style

CELL = r"^L(\d+)_D([\d.]+)$"
BIN = r"^P(\d+)_(\d+)$"


def _trained_length(rows: pd.DataFrame, task: str) -> float | None:
    trained = rows[(rows["task"] == task) & (rows["metric"] == "trained_length")]["value"].dropna()
    return float(trained.iloc[0]) if len(trained) else None


def retrieval_heatmaps(evals: pd.DataFrame, names: dict[str, str], suite: str) -> Figure:
    """One panel per arm: accuracy (%) with needle depth down and context length across, the training
    length marked, in the form of the paper's Fig. 4 (mean over seeds)."""
    rows = evals[evals["suite"] == suite]
    cells = rows[rows["metric"] == "accuracy"]
    parsed = cells["task"].str.extract(CELL)
    cells = cells.assign(length=parsed[0].astype(float), depth=parsed[1].astype(float)).dropna(
        subset=["length"]
    )
    arms = [label for label in names if (cells["label"] == label).any()]
    with style():
        fig = figure(height=2.4 if len(arms) <= 4 else 4.6)
        if not arms:
            empty_panel(fig.add_subplot(), f"no {suite} results")
            return fig
        columns = min(4, len(arms))
        axes = fig.subplots((len(arms) + columns - 1) // columns, columns, squeeze=False).ravel()
        for ax in axes[len(arms) :]:
            ax.set_visible(False)
        trained = _trained_length(rows, "retrieval")
        for ax, label in zip(axes, arms, strict=False):
            mine = cells[cells["label"] == label]
            grid = mine.pivot_table(index="depth", columns="length", values="value", aggfunc="mean")
            image = ax.imshow(100 * grid.to_numpy(), vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
            ax.grid(False)
            for (i, j), value in np.ndenumerate(100 * grid.to_numpy()):
                if not np.isnan(value):
                    ink = "white" if value < 25 or value > 85 else "black"  # readable on the ends of the map
                    ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=6, color=ink)
            lengths = [int(x) for x in grid.columns]
            ax.set_xticks(range(len(lengths)), [_short(n) for n in lengths], fontsize=6)
            ax.set_yticks(range(len(grid.index)), [f"{100 * d:.0f}%" for d in grid.index], fontsize=6)
            if trained is not None and any(n > trained for n in lengths):
                ax.axvline(sum(n <= trained for n in lengths) - 0.5, color="black", linewidth=1.0)
            ax.set_title(names[label], fontsize=8)
            ax.set_xlabel("context length (tokens)", fontsize=7)
        axes[0].set_ylabel("needle depth", fontsize=7)
        fig.colorbar(image, ax=list(axes[: len(arms)]), shrink=0.8, label="retrieved (%)")
    return fig


def position_loss_curves(evals: pd.DataFrame, names: dict[str, str]) -> Figure:
    """Loss by position (log axis), one line per arm (mean over seeds), the training length dashed."""
    rows = evals[evals["suite"] == "position_loss"]
    bins = rows[rows["metric"] == "loss"]
    parsed = bins["task"].str.extract(BIN).astype(float)
    bins = bins.assign(lo=parsed[0], hi=parsed[1]).dropna(subset=["lo"])
    bins = bins.assign(middle=np.sqrt(bins["lo"] * bins["hi"]))
    arm_look = looks(list(names))
    with style():
        fig = figure(height=2.8)
        ax = fig.add_subplot()
        if bins.empty:
            empty_panel(ax, "no position_loss results")
            return fig
        for label, name in names.items():
            mine = bins[bins["label"] == label]
            if mine.empty:
                continue
            curve = mine.groupby("middle")["value"].mean()
            look = arm_look[label]
            ax.plot(curve.index, curve.to_numpy(), color=look.color, linestyle=look.linestyle, label=name)
        trained = _trained_length(rows, "position_loss")
        if trained is not None:
            ax.axvline(trained, color="black", linestyle="--", linewidth=0.8, label="training length")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("position (tokens of context)")
        ax.set_ylabel("loss (nats/token)")
        ax.legend(frameon=False, fontsize=7)
    return fig


def _short(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)

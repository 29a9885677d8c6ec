"""Figures of training telemetry: loss curves (the paper's Figs 5, 6 and 8) and MoE expert load.

Both take the tidy frames (analysis.frames) and a ``names`` mapping from our arm labels to what the figure
calls them (the paper's row name where a sweep declares one), in legend order. Every series carries its
arm's name as its matplotlib label, so tests and notebooks can find it on the returned Figure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.style import HIGHLIGHT, TOKENS, empty_panel, figure, looks, style

SMOOTHING = 0.9  # EMA weight of the past; debiased like TensorBoard's


def smoothing_for(points: int) -> float:
    """The EMA weight for a curve of ``points`` logged steps: a span of about a twentieth of the curve
    (at most :data:`SMOOTHING`'s), so that a 150-step run's smoothed loss follows its raw curve instead of
    lagging hundreds of steps behind it as the long-run weight would."""
    span = max(2.0, points / 20)
    return min(SMOOTHING, 1 - 2 / (span + 1))


def ema(values: np.ndarray, weight: float | None = None) -> np.ndarray:
    """Debiased exponential moving average (the first points are not pulled towards zero); the weight
    adapts to the curve's length unless given (:func:`smoothing_for`)."""
    weight = smoothing_for(len(values)) if weight is None else weight
    out = np.empty(len(values))
    acc = 0.0
    for i, v in enumerate(values):
        acc = weight * acc + (1 - weight) * v
        out[i] = acc / (1 - weight ** (i + 1))
    return out


def loss_curves(steps: pd.DataFrame, events: pd.DataFrame, names: dict[str, str], title: str = "") -> Figure:
    """Training loss vs tokens per arm (smoothed; raw in light), held-out loss as open markers, and the
    ``loss_spike`` events of events.jsonl as crosses on the raw curve."""
    arm_look = looks(list(names))
    with style():
        fig = figure(height=3.2)
        ax = fig.add_subplot()
        tops, bottoms, spike_xy = [], [], []
        for label, name in names.items():
            look = arm_look[label]
            for k, (run_id, run) in enumerate(steps[steps["label"] == label].groupby("run_id", sort=False)):
                train = run.dropna(subset=["loss"])
                if not train.empty:
                    x, y = train["tokens"].to_numpy(float), train["loss"].to_numpy(float)
                    ax.plot(x, y, color=look.color, alpha=0.25, linewidth=0.6, label=f"_{name} raw")
                    smooth = ema(y)
                    ax.plot(
                        x,
                        smooth,
                        color=look.color,
                        linestyle=look.linestyle,
                        label=name if k == 0 else f"_{name}",
                    )
                    tops.append(np.quantile(smooth[len(smooth) // 10 :], 0.98))
                    bottoms.append(y.min())
                held = run.dropna(subset=["val_loss"])
                if not held.empty:
                    ax.plot(
                        held["tokens"],
                        held["val_loss"],
                        linestyle="none",
                        marker=look.marker,
                        markersize=4,
                        markerfacecolor="white",
                        color=look.color,
                        label=f"{name}, held-out" if k == 0 else "_",
                    )
                spikes = events[(events["run_id"] == run_id) & (events["event"] == "loss_spike")]
                tokens_at = dict(zip(run["step"], run["tokens"], strict=True))
                spike_xy += [(tokens_at.get(s.step, np.nan), s.loss) for s in spikes.itertuples()]
        if spike_xy:
            xy = np.array(spike_xy, dtype=float)
            ax.scatter(
                xy[:, 0],
                xy[:, 1],
                marker="x",
                s=28,
                color=HIGHLIGHT,
                zorder=5,
                label=f"loss spike ({len(xy)})",
            )
            tops.append(np.nanmax(xy[:, 1]))
        if not tops:
            empty_panel(ax, "no training loss logged yet")
            return fig
        span = max(tops) - min(bottoms)
        ax.set_ylim(min(bottoms) - 0.05 * span, max(tops) + 0.05 * span)
        ax.xaxis.set_major_formatter(TOKENS)
        ax.set_xlabel("training tokens")
        ax.set_ylabel("loss (nats/token)")
        ax.set_title(title)
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def expert_load(load: pd.DataFrame, names: dict[str, str], title: str = "") -> Figure:
    """Share of routed tokens per expert over training, one heatmap per MoE layer and arm (first seed)."""
    arms = [label for label in names if (load["label"] == label).any()]
    with style():
        if not arms:
            fig = figure(height=1.5)
            empty_panel(fig.add_subplot(), "no expert_load in metrics.jsonl (no MoE arm)")
            return fig
        layers = int(load["moe_layer"].max()) + 1
        fig = figure(width=3.5 * len(arms), height=1.4 * layers + 0.6)
        axes = fig.subplots(layers, len(arms), squeeze=False, sharex="col")
        for j, label in enumerate(arms):
            rows = load[load["label"] == label]
            rows = rows[rows["run_id"] == rows["run_id"].iloc[0]]
            n_experts = int(rows["expert"].max()) + 1
            for layer in range(layers):
                ax = axes[layer, j]
                grid = rows[rows["moe_layer"] == layer].pivot(index="expert", columns="tokens", values="load")
                if grid.empty:
                    empty_panel(ax, f"MoE layer {layer}: no data")
                    continue
                tokens = grid.columns.to_numpy(float)
                image = ax.imshow(
                    grid.to_numpy(float),
                    aspect="auto",
                    cmap="Greys",
                    origin="lower",
                    vmin=0,
                    extent=(tokens.min(), tokens.max(), -0.5, n_experts - 0.5),
                    interpolation="nearest",
                )
                ax.set_ylabel(f"layer {layer}\nexpert")
                ax.grid(False)
                ax.xaxis.set_major_formatter(TOKENS)
                bar = fig.colorbar(image, ax=ax, pad=0.01)
                bar.set_label(f"share (uniform {1 / n_experts:.2f})", fontsize=6)
            axes[0, j].set_title(names[label])
            axes[-1, j].set_xlabel("training tokens")
        if title:
            fig.suptitle(title)
    return fig

"""Figures of single attention heads, for the attention-heads notebook (and any report that wants them):

* :func:`prompt_tokens`: the paper's Fig. 7 view as text: a few-shot IMDB prompt rendered token by token,
  each token shaded by the attention the final ':' pays to it, label tokens outlined;
* :func:`attention_patterns`: full (query x key) attention patterns of chosen heads on the repeated
  random-token sequence (the induction stripe: each token of the second copy attends to the token after
  its first occurrence, a diagonal ``half_len - 1`` below the main one) or on the IMDB prompt;
* :func:`pattern_atlas`: every head of one arm at a glance (layers x heads), the static twin of
* :func:`head_picker`: an ipywidgets head picker (arm, head) redrawing :func:`head_panel`; it needs a live
  Jupyter front end (JupyterLab / Notebook 7 ship the widget manager, no CDN needed) and returns None when
  ipywidgets is not installed.

Inputs are :class:`analysis.attention_maps.PromptMaps` / ``SequenceMaps`` and the per-head scores frame of
one run (``analysis.heads``); a head is ``(block, layer, head)``. Highlighted things carry a ``gid``
(``label-tokens``, ``query-token``, ``induction-diagonal``) so tests can find them on the Figure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from analysis.attention_maps import PromptMaps, SequenceMaps
from analysis.style import HIGHLIGHT, WIDTH_IN, empty_panel, figure, style

if TYPE_CHECKING:
    from analysis.heads import ArmHeads, HeadStudy

Head = tuple[int, int, int]  # (block, layer, head)
TOKEN_CMAP = "Blues"
PATTERN_CMAP = "Greys"
COLUMNS = 96  # characters per line of the token view
ROW_IN = 0.17  # height of one text line of the token view (inches)
NEWLINE = "\u21b5"  # shown for a line break inside a token
MONO_ADVANCE = 0.61  # width of a DejaVu Sans Mono character in ems (0.602), with a little room
UNIFORM_SPAN = 5.0  # the token view's colour scale reaches at least 5x uniform attention


def _score(heads: pd.DataFrame, head: Head, score: str) -> float | None:
    row = heads[(heads["block"] == head[0]) & (heads["head"] == head[2])]
    if row.empty or pd.isna(row[score].iloc[0]):
        return None
    return float(row[score].iloc[0])


def layout_tokens(pieces: list[str], columns: int = COLUMNS) -> list[tuple[int, int, str]]:
    """(row, column, shown text) of each token when the text is set in lines of ``columns`` characters:
    a token that would cross the margin starts a new line; line breaks are shown as return arrows, and a
    blank line (the separator between demonstrations) also ends the line, so each demonstration starts on
    a line of its own while the text stays compact."""
    out, row, col, after_break = [], 0, 0, False
    for piece in pieces:
        shown = piece.replace("\n", NEWLINE)[:columns] or " "
        if col + len(shown) > columns:
            row, col = row + 1, 0
        out.append((row, col, shown))
        col += len(shown)
        blank_line = "\n\n" in piece or (after_break and piece.startswith("\n"))
        after_break = piece.endswith("\n")
        if blank_line:
            row, col, after_break = row + 1, 0, False
    return out


def _fit_text(fig: Figure, axes: list, columns: int) -> None:
    """Size the token views' monospaced text so that ``columns`` characters fill each axes' width (known
    once the layout is done)."""
    fig.draw_without_rendering()
    for ax in axes:
        size = ax.get_window_extent().width / fig.dpi * 72 / columns / MONO_ADVANCE
        for text in ax.texts:
            text.set_fontsize(size)


def _token_panel(ax, view: PromptMaps, weights: np.ndarray, columns: int, font_pt: float = 6) -> Normalize:
    """The prompt's tokens at their layout places, each shaded by its weight, label tokens outlined, the
    final ':' boxed. The colour scale runs to the largest weight on a text token (the <eos> sink is
    clipped), and at least to :data:`UNIFORM_SPAN` times uniform attention, so a head that attends evenly
    stays pale instead of saturating."""
    cmap = colormaps[TOKEN_CMAP]
    placed = layout_tokens(view.pieces, columns)
    text = weights[1:] if len(weights) > 1 else weights
    norm = Normalize(0, max(float(text.max()), UNIFORM_SPAN / len(weights)), clip=True)
    labels = set(view.label_positions)
    for pos, (row, col, shown) in enumerate(placed):
        shade = norm(weights[pos])
        box = Rectangle((col, row), len(shown), 1, facecolor=cmap(shade), edgecolor="none", linewidth=0)
        ax.add_patch(box)
        bold = pos in labels or pos == view.final
        ax.text(
            col + 0.02,
            row + 0.5,
            shown,
            family="DejaVu Sans Mono",
            fontsize=font_pt,
            va="center",
            ha="left",
            color="white" if shade > 0.6 else "black",
            fontweight="bold" if bold else "normal",
        )
        if pos in labels or pos == view.final:
            frame = Rectangle(
                (col, row),
                len(shown),
                1,
                fill=False,
                edgecolor=HIGHLIGHT if pos in labels else "black",
                linewidth=1.0,
                linestyle="-" if pos in labels else "--",
            )
            frame.set_gid("label-tokens" if pos in labels else "query-token")
            ax.add_patch(frame)
    rows = placed[-1][0] + 1
    ax.set_xlim(0, columns)
    ax.set_ylim(rows, 0)
    ax.set_axis_off()
    return norm


def prompt_tokens(
    view: PromptMaps | None, heads: pd.DataFrame, chosen: list[Head], name: str = "", columns: int = COLUMNS
) -> Figure:
    """The paper's Fig. 7 view as text: for each chosen head of one arm, the few-shot IMDB prompt token by
    token, shaded by the attention from the final ':' (the answer cue) to each token; the demonstrations'
    label tokens are outlined (orange), the final ':' is boxed (dashed). Titles: the head's mean attention
    mass on the label tokens over the suite's prompts and its lift over uniform attention."""
    with style():
        if view is None or not chosen:
            fig = figure(height=1.2)
            empty_panel(
                fig.add_subplot(), f"{name}: no IMDB prompt maps (attention suite without the imdb pack)"
            )
            return fig
        rows = layout_tokens(view.pieces, columns)[-1][0] + 1
        panel_in = rows * ROW_IN + 0.45
        fig = figure(height=panel_in * len(chosen) + 0.4)
        axes = fig.subplots(len(chosen), 1, squeeze=False)[:, 0]
        for ax, head in zip(axes, chosen, strict=True):
            block, layer, h = head
            weights = view.maps[block][h, view.final, : view.final + 1]
            norm = _token_panel(ax, view, weights, columns)
            mass, lift = _score(heads, head, "label_attention"), _score(heads, head, "label_attention_lift")
            on_labels = float(weights[view.label_positions].sum()) if view.label_positions else 0.0
            title = f"{name}, layer {layer}, head {h}: " if name else f"layer {layer}, head {h}: "
            if mass is not None:
                title += f"label mass {mass:.2f} (x{lift:.1f} uniform) over the suite's prompts; "
            title += f"here {on_labels:.2f} on labels, {weights[0]:.2f} on <eos>"
            ax.set_title(title, loc="left")
            ax.set_gid(f"layer{layer}-head{h}")
            bar = fig.colorbar(
                _mappable(norm, TOKEN_CMAP), ax=ax, fraction=0.02, pad=0.01, aspect=12, label="attn"
            )
            bar.ax.tick_params(labelsize=6)
        fig.suptitle("attention from the final ':' to each token (darker: more); outlined: label tokens")
        _fit_text(fig, list(axes), columns)
    return fig


def _mappable(norm, cmap: str):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


def _pattern_panel(ax, view: PromptMaps | SequenceMaps, probs: np.ndarray, gamma: float = 0.5) -> None:
    """One head's (query x key) pattern; on the repeated sequence the copies' boundary and the expected
    induction diagonal are marked, on the prompt the label tokens (ticks) and the final ':' row."""
    t = probs.shape[-1]
    ax.imshow(
        probs,
        cmap=PATTERN_CMAP,
        norm=PowerNorm(gamma, vmin=0, vmax=1),
        interpolation="nearest",
        aspect="equal",
    )
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
    ax.grid(False)
    if isinstance(view, SequenceMaps):
        start = view.repeat_start
        for line in (ax.axvline, ax.axhline):
            line(start - 0.5, color="0.5", linewidth=0.5, linestyle=":")
        queries = np.arange(start, t)
        (diag,) = ax.plot(
            queries - view.half_len + 1 - 3,
            queries,
            color=HIGHLIGHT,
            linewidth=0.6,
            alpha=0.7,
            linestyle="--",
        )
        diag.set_gid("induction-diagonal")
    else:
        for pos in view.label_positions:
            ax.axvline(pos, ymin=0, ymax=0.03, color=HIGHLIGHT, linewidth=1.0).set_gid("label-tokens")
        ax.axhline(view.final, color=HIGHLIGHT, linewidth=0.4, alpha=0.6).set_gid("query-token")
    ax.set_xlim(-0.5, t - 0.5)
    ax.set_ylim(t - 0.5, -0.5)


def attention_patterns(
    views: dict[str, PromptMaps | SequenceMaps],
    heads: pd.DataFrame,
    chosen: dict[str, list[Head]],
    names: dict[str, str],
    gamma: float = 0.5,
) -> Figure:
    """Full attention patterns (query rows, key columns; shade: probability with a power-law scale of
    exponent ``gamma`` so weak stripes show) of the chosen heads of each arm, one row of panels per arm.
    On the repeated random-token sequence an induction head shows a stripe along the dashed line (the
    token after each token's first occurrence; drawn 3 positions to the left so it does not hide the
    stripe); a previous-token head shows the first sub-diagonal."""
    arms = [label for label in names if label in views and chosen.get(label)]
    k = max((len(chosen[label]) for label in arms), default=1)
    with style():
        if not arms:
            fig = figure(height=1.2)
            empty_panel(fig.add_subplot(), "no attention maps")
            return fig
        side = WIDTH_IN / k
        fig = figure(height=side * len(arms) + 0.4)
        axes = fig.subplots(len(arms), k, squeeze=False)
        for i, label in enumerate(arms):
            view = views[label]
            mine = heads[heads["label"] == label]
            for j in range(k):
                ax = axes[i, j]
                if j >= len(chosen[label]):
                    empty_panel(ax, "")
                    continue
                block, layer, h = chosen[label][j]
                _pattern_panel(ax, view, view.maps[block][h], gamma)
                ind = _score(mine, chosen[label][j], "induction_score")
                prev = _score(mine, chosen[label][j], "previous_token_score")
                scores = f"\ninduction {ind:.2f}, prev. {prev:.2f}" if ind is not None else ""
                ax.set_title(f"layer {layer}, head {h}{scores}", fontsize=7)
                ax.set_gid(f"{label}-layer{layer}-head{h}")
                ax.set_ylabel(f"{names[label]}\nquery position" if j == 0 else "")
        what = (
            "EOS + random tokens + the same tokens again; dashed: where an induction head looks "
            "(drawn 3 keys to the left)"
            if isinstance(views[arms[0]], SequenceMaps)
            else "the few-shot IMDB prompt; ticks: label tokens; line: the final ':'"
        )
        fig.suptitle(f"attention patterns on {what}")
    return fig


def pattern_atlas(view: PromptMaps | SequenceMaps | None, heads: pd.DataFrame, name: str = "") -> Figure:
    """Every head of one arm (rows: attention layers, columns: heads) on one sequence, small, titled with
    its induction score: the static view of everything the head picker can show."""
    with style():
        if view is None or heads.empty:
            fig = figure(height=1.2)
            empty_panel(fig.add_subplot(), f"{name}: no attention maps")
            return fig
        layers = sorted(heads["layer"].unique())
        n_heads = int(heads["head"].max()) + 1
        side = min(1.6, WIDTH_IN / n_heads)
        fig = figure(width=side * n_heads, height=side * len(layers) + 0.5)
        axes = fig.subplots(len(layers), n_heads, squeeze=False)
        for i, layer in enumerate(layers):
            block = int(heads.loc[heads["layer"] == layer, "block"].iloc[0])
            for h in range(n_heads):
                ax = axes[i, h]
                ax.imshow(
                    view.maps[block][h],
                    cmap=PATTERN_CMAP,
                    norm=PowerNorm(0.5, vmin=0, vmax=1),
                    interpolation="nearest",
                )
                ind = _score(heads, (block, layer, h), "induction_score")
                ax.set_title(f"L{layer} H{h}" + (f" ind {ind:.2f}" if ind is not None else ""), fontsize=6)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_gid(f"layer{layer}-head{h}")
        fig.suptitle(f"{name}: every head's attention pattern (rows: layers; columns: heads)")
    return fig


def head_panel(arm: ArmHeads, head: Head) -> Figure:
    """One head of one arm: its patterns on the repeated sequence and the IMDB prompt, and the prompt's
    tokens shaded by the final ':''s attention (what the head picker draws)."""
    block, layer, h = head
    with style():
        fig = figure(height=5.6)
        top, bottom = fig.subfigures(2, 1, height_ratios=[1.1, 1])
        left, right = top.subplots(1, 2)
        for ax, view, what in ((left, arm.sequence, "repeated tokens"), (right, arm.prompt, "IMDB prompt")):
            if view is None:
                empty_panel(ax, f"no {what} maps")
                continue
            _pattern_panel(ax, view, view.maps[block][h])
            ax.set_title(what)
        ind = _score(arm.heads, head, "induction_score")
        prev = _score(arm.heads, head, "previous_token_score")
        mass = _score(arm.heads, head, "label_attention")
        scores = ", ".join(
            f"{t} {v:.2f}"
            for t, v in (("induction", ind), ("previous token", prev), ("label mass", mass))
            if v is not None
        )
        fig.suptitle(f"{arm.name}: layer {layer}, head {h} ({scores})")
        ax = bottom.subplots()
        if arm.prompt is None:
            empty_panel(ax, "no IMDB prompt maps")
        else:
            columns = 120
            weights = arm.prompt.maps[block][h, arm.prompt.final, : arm.prompt.final + 1]
            _token_panel(ax, arm.prompt, weights, columns)
            _fit_text(fig, [ax], columns)
    return fig


def head_picker(study: HeadStudy):
    """An ipywidgets picker (arm, then any of its heads) that redraws :func:`head_panel`; None when
    ipywidgets is not installed. Widgets need a live kernel and a Jupyter front end; the executed or
    exported notebook shows the static figures instead."""
    try:
        import ipywidgets as widgets
    except ImportError:
        return None
    from analysis.notebooks import show

    if not study.arms:
        return None

    def head_options(label: str) -> list[tuple[str, Head]]:
        heads = study.arms[label].heads.sort_values(["layer", "head"])
        return [
            (f"layer {r.layer} head {r.head} (induction {r.induction_score:.2f})", (r.block, r.layer, r.head))
            for r in heads.itertuples()
        ]

    first = next(iter(study.arms))
    arm = widgets.Dropdown(options=[(a.name, label) for label, a in study.arms.items()], description="arm")
    head = widgets.Dropdown(
        options=head_options(first), value=study.arms[first].top(1, "induction_score")[0], description="head"
    )
    out = widgets.Output()

    def draw(*_):
        with out:
            out.clear_output(wait=True)
            show(head_panel(study.arms[arm.value], head.value), "head-panel", dpi=110)

    def arm_changed(change):
        head.options = head_options(change["new"])
        head.value = study.arms[change["new"]].top(1, "induction_score")[0]

    arm.observe(arm_changed, names="value")
    head.observe(draw, names="value")
    draw()
    return widgets.VBox([widgets.HBox([arm, head]), out])

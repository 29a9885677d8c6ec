"""Publication style for every figure: one place for fonts, sizes, the per-arm look and axis formats.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``), never pyplot, so no GUI
backend is ever involved (scripts, CI and SLURM nodes need no display) and figures do not leak between
calls. Arms differ by colour *and* line style and marker (Okabe-Ito colours, distinct in luminance), so a
figure printed in grayscale still tells them apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "0.9",
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.4,
    "savefig.bbox": "tight",
    "savefig.dpi": 200,
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text for journals
    "font.family": "DejaVu Sans",
}

# (colour, line style, marker): black/orange/blue/green... differ in lightness as well as hue.
LOOKS = [
    ("#000000", "-", "o"),
    ("#E69F00", "--", "s"),
    ("#0072B2", "-.", "^"),
    ("#009E73", ":", "D"),
    ("#CC79A7", (0, (5, 1)), "v"),
    ("#56B4E9", (0, (1, 1)), "P"),
    ("#D55E00", (0, (3, 1, 1, 1)), "X"),
]
HIGHLIGHT = "#D55E00"  # label tokens, top heads, spikes: dark enough to stay visible in grayscale
MUTED = "0.7"
WIDTH_IN = 7.0  # a two-column figure


@dataclass(frozen=True)
class Look:
    color: str
    linestyle: object
    marker: str


def looks(names: list[str]) -> dict[str, Look]:
    """A distinct look per arm, in the given order (stable across figures of one report)."""
    return {name: Look(*LOOKS[i % len(LOOKS)]) for i, name in enumerate(names)}


@contextlib.contextmanager
def style() -> Iterator[None]:
    with mpl.rc_context(RC):
        yield


def figure(width: float = WIDTH_IN, height: float = 3.0) -> Figure:
    """A new figure (use inside :func:`style`)."""
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` to ``path`` (format from the suffix) with no creation date in PDF or SVG and SVG text
    kept as text (small, diffable), so re-rendering unchanged runs or records rewrites no file."""
    dateless = {".pdf": {"CreationDate": None}, ".svg": {"Date": None}}.get(path.suffix)
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": "ablate"}):
        fig.savefig(path, metadata=dateless)


def _si(value: float, _pos: object = None) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


TOKENS = FuncFormatter(_si)


def empty_panel(ax, message: str) -> None:
    """An axes that says why it has no data (instead of a silent blank)."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True, color="0.3")

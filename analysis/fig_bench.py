"""Figures of benchmark records: the Jamba paper's Fig. 3 (prefill throughput against context) and Fig. 2
(the longest context that fits), for our arms, and training throughput beside the anchors.

Both take checked records (:mod:`analysis.bench_records`) and return a ``Figure`` whose series carry their
names as matplotlib labels (``1.3b-1to7``, ``1.3b-1to7 transformers``), so tests find them on the object.
A prefill series is one arm and implementation: ours, or an anchor timed beside it by ``ablate bench
prefill --against``; the arm gives its colour and the implementation its line style and marker. The
context bars put the measured length beside the accounting's prediction, which counts weights, KV cache
and Mamba state only: the gap between them is what a prefill's transient activations take.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.bench_records import BenchRecord
from analysis.style import MUTED, TOKENS, empty_panel, figure, looks, style

GIB = 2**30


def context_text(tokens: float, _pos: object = None) -> str:
    """A context in binary units, as ``ablate bench`` takes them: 131072 -> ``128K``, 1673812 -> ``1.6M``."""
    for unit, scale in (("M", 2**20), ("K", 2**10)):
        if tokens >= scale:
            return f"{tokens / scale:.3g}{unit}"
    return f"{tokens:g}"


CONTEXT = FuncFormatter(context_text)


def series_name(preset: str, implementation: str) -> str:
    """``1.3b-1to7`` for ours, ``1.3b-1to7 transformers`` for an anchor timed beside it."""
    return preset if implementation == "ours" else f"{preset} {implementation}"


# An implementation's line style and marker; its arm gives the colour, so an arm's anchors read as its own.
IMPLEMENTATION_LOOK = {
    "ours": ("-", "o"),
    "transformers": ("--", "s"),
    "llama": (":", "^"),
    "mamba_ssm": ("-.", "v"),
}
OTHER_IMPLEMENTATION = ("-.", "D")


def prefill_series(records: list[BenchRecord]) -> dict[tuple[str, str], list[dict]]:
    """(arm, implementation) -> its measured rows (out-of-memory rows left out), by context."""
    series: dict[tuple[str, str], list[dict]] = {}
    for record in (r for r in records if r.kind == "prefill"):
        for row in record.rows:
            if "error" not in row:
                series.setdefault((record.preset, record.implementation(row)), []).append(row)
    return {key: sorted(rows, key=lambda r: r["context"]) for key, rows in series.items()}


def _device(records: list[BenchRecord]) -> str:
    return ", ".join(dict.fromkeys(r.data["device"] for r in records))


def prefill_throughput(records: list[BenchRecord]) -> Figure:
    """Left: prefill tokens/s against context (log x) per arm and implementation. Right: peak allocator
    memory of the same prefills (where the device reports it), the accounting's weights + KV cache +
    Mamba state as a thin line of the same look."""
    series = prefill_series(records)
    colour = {arm: lk.color for arm, lk in looks(list(dict.fromkeys(arm for arm, _ in series))).items()}
    with style():
        fig = figure(height=3.0)
        speed, memory = fig.subplots(1, 2)
        if not series:
            empty_panel(speed, "no prefill records")
            empty_panel(memory, "no prefill records")
            return fig
        measured_memory = False
        for (arm, implementation), rows in series.items():
            name = series_name(arm, implementation)
            linestyle, marker = IMPLEMENTATION_LOOK.get(implementation, OTHER_IMPLEMENTATION)
            x = [r["context"] for r in rows]
            kw = {"color": colour[arm], "linestyle": linestyle, "marker": marker, "markersize": 3.5}
            speed.plot(x, [r["tokens_per_s"] for r in rows], label=name, **kw)
            peaks = [(r["context"], r["peak_bytes"] / GIB) for r in rows if r["peak_bytes"] is not None]
            if peaks:
                measured_memory = True
                memory.plot(*zip(*peaks, strict=True), label=name, **kw)
                predicted = [
                    (r["weights_bytes"] + r["kv_cache_bytes"] + r["mamba_state_bytes"]) / GIB for r in rows
                ]
                memory.plot(x, predicted, color=colour[arm], linewidth=0.6, label=f"_{name} accounting")
        contexts = sorted({r["context"] for rows in series.values() for r in rows})
        for ax in (speed, memory):
            ax.set_xscale("log", base=2)
            ax.set_xticks(contexts)  # the measured contexts, each labelled
            ax.xaxis.set_major_formatter(CONTEXT)
            ax.set_xlabel("context (tokens, batch 1)")
        speed.yaxis.set_major_formatter(TOKENS)
        speed.set_ylim(bottom=0)
        speed.set_ylabel("prefill tokens/s")
        speed.set_title(f"Prefill throughput ({_device(records)})")
        if measured_memory:
            memory.set_ylim(bottom=0)
            memory.set_ylabel("peak memory (GiB)")
            memory.set_title("Peak memory (thin: weights + KV cache + state)")
        else:
            empty_panel(memory, "no peak memory in these records (measured on CUDA only)")
        # one legend for both panels, beside them: inside, it would cover the long-context points
        fig.legend(*speed.get_legend_handles_labels(), frameon=False, loc="outside right center")
    return fig


def _budget_title(records: list[BenchRecord]) -> str:
    budgets = sorted({r.data["budget_bytes"] for r in records})
    return " / ".join(f"{b / GIB:.2f} GiB" for b in budgets)


def max_context(records: list[BenchRecord]) -> Figure:
    """Per arm, the longest batch-1 prefill measured to fit beside the accounting's prediction (log y);
    an arm without attention has no cache that grows with the context, so no predicted bar."""
    found = sorted((r for r in records if r.kind == "context"), key=lambda r: (r.preset, r.prefill_pass))
    with style():
        fig = figure(width=max(4.5, 1.2 * len(found) + 1.5), height=3.2)
        ax = fig.add_subplot()
        if not found:
            empty_panel(ax, "no context records")
            return fig
        x = np.arange(len(found))
        width = 0.38
        measured = [r.data["max_context"] or 0 for r in found]
        predicted = [r.data["predicted_max_context"] for r in found]
        bars = ax.bar(x - width / 2, measured, width, color="0.15", label="measured")
        ax.bar(
            x + width / 2,
            [p or 0 for p in predicted],
            width,
            color=MUTED,
            hatch="//",
            edgecolor="0.35",
            label="accounting (weights + KV + state)",
        )
        for bar, record in zip(bars, found, strict=True):
            if record.data["hit_limit"]:
                bar.set_hatch("..")
        top = max([*measured, *(p or 0 for p in predicted)])
        for i, (m, p, r) in enumerate(zip(measured, predicted, found, strict=True)):
            ax.annotate(
                (">=" if r.data["hit_limit"] else "") + context_text(m),
                (i - width / 2, m),
                ha="center",
                va="bottom",
                fontsize=6,
            )
            ax.annotate(
                context_text(p) if p is not None else "no KV cache",
                (i + width / 2, p if p is not None else m),
                ha="center",
                va="bottom",
                fontsize=6,
            )
        ax.set_yscale("log", base=2)
        low = min((v for v in [*measured, *predicted] if v), default=1)
        ax.set_ylim(bottom=2 ** math.floor(math.log2(max(1, low / 2))), top=max(2, top * 2))
        ax.yaxis.set_major_formatter(CONTEXT)
        ax.set_xticks(x, [f"{r.preset}\n{r.prefill_pass}" for r in found])
        ax.set_ylabel("longest batch-1 context (tokens)")
        ax.set_title(f"Longest context within {_budget_title(found)} ({_device(found)})")
        ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2)
    return fig


def train_label(row: dict) -> str:
    """A training row's bar label: ``ours (fused, MoE grouped)``, ``transformers JambaForCausalLM``."""
    return row.get("label", row["model"]).replace("HybridLM, ", "").replace(" (HybridLM)", "")


def _train_setting(record: BenchRecord) -> tuple[int, bool]:
    """A train record's batch size and whether its rows ran under torch.compile (``--compile on``)."""
    config = record.data["config"]
    return config["batch"], "on" in config.get("compile", ())


def train_throughput(records: list[BenchRecord]) -> Figure:
    """Per ``bench train`` record (an arm at one batch), the tokens/s (left) and peak memory (right) of ours
    and of each anchor timed beside it in the same run, as horizontal bars coloured by model; an anchor's
    bar carries ours / it (the record's first row of ours over that anchor)."""
    found = sorted((r for r in records if r.kind == "train"), key=lambda r: (r.preset, *_train_setting(r)))
    bars = [(r, row) for r in found for row in r.rows if "skipped" not in row]
    models = list(dict.fromkeys(["ours", *(row["model"] for _, row in bars)]))
    colour = {model: look.color for model, look in looks(models).items()}
    with style():
        fig = figure(height=1.0 + 0.17 * len(bars) + 0.3 * len(found))
        speed, memory = fig.subplots(1, 2, sharey=True, width_ratios=(3, 1))
        if not bars:
            empty_panel(speed, "no train records")
            empty_panel(memory, "no train records")
            return fig
        y, ticks, groups, at = [], [], [], 0.0
        for record in found:
            rows = [row for row in record.rows if "skipped" not in row]
            batch, compiled = _train_setting(record)
            heading = f"{record.preset}, batch {batch} x {record.data['config']['seq_len']}"
            groups.append((at - 0.1, heading + (", torch.compile" if compiled else "")))
            at += 0.8  # room for the group's heading
            for row in rows:
                y.append(at)
                ticks.append(train_label(row))
                at += 1.0
            at += 0.5
        colours = [colour[row["model"]] for _, row in bars]
        speed.barh(y, [row["tokens_per_s"] for _, row in bars], color=colours, height=0.8)
        memory.barh(y, [row.get("peak_gib") or 0 for _, row in bars], color=colours, height=0.8)
        for pos, (_, row) in zip(y, bars, strict=True):
            text = f" {row['tokens_per_s'] / 1e3:.1f}K"
            if row.get("ours_over") is not None:
                text += f"   ours / it {row['ours_over']:.2f}"
            speed.annotate(text, (row["tokens_per_s"], pos), va="center", fontsize=6)
            if row.get("peak_gib") is not None:
                memory.annotate(f" {row['peak_gib']:.0f}", (row["peak_gib"], pos), va="center", fontsize=6)
        for pos, heading in groups:
            speed.annotate(heading, (0, pos), xycoords=("axes fraction", "data"), fontsize=7, weight="bold")
        speed.set_yticks(y, ticks)
        speed.invert_yaxis()
        speed.tick_params(axis="y", length=0)
        speed.set_xlim(0, 1.35 * max(row["tokens_per_s"] for _, row in bars))
        speed.xaxis.set_major_formatter(TOKENS)
        speed.set_xlabel("training tokens/s")
        speed.set_title(f"Training throughput ({_device(found)})")
        memory.set_xlim(0, 1.3 * max((row.get("peak_gib") or 0 for _, row in bars), default=1) or 1)
        memory.set_xlabel("peak GiB")
        memory.set_title("Peak memory")
    return fig


def scaling(records: list[BenchRecord]) -> Figure:
    """Per ``bench scale`` record and strategy, tokens/s per process (left) and scaling efficiency
    (right) against the number of processes; the dotted line is perfect scaling."""
    found = [r for r in records if r.kind == "scale"]
    series = {(r.preset, row["strategy"]): [] for r in found for row in r.rows if "error" not in row}
    for r in found:
        for row in r.rows:
            if "error" not in row:
                series[(r.preset, row["strategy"])].append(row)
    look = looks([f"{preset} {strategy}" for preset, strategy in series])
    with style():
        fig = figure(height=2.8)
        speed, efficiency = fig.subplots(1, 2)
        if not series:
            empty_panel(speed, "no scale records")
            empty_panel(efficiency, "no scale records")
            return fig
        for (preset, strategy), rows in series.items():
            rows = sorted(rows, key=lambda row: row["processes"])
            n = [row["processes"] for row in rows]
            name = f"{preset} {strategy}"
            style_of = {"color": look[name].color, "linestyle": look[name].linestyle, "marker": "o"}
            speed.plot(n, [row["tokens_per_s_per_process"] for row in rows], label=name, **style_of)
            efficiency.plot(n, [100 * (row.get("efficiency") or 0) for row in rows], label=name, **style_of)
        counts = sorted({row["processes"] for rows in series.values() for row in rows})
        for ax in (speed, efficiency):
            ax.set_xscale("log", base=2)
            ax.set_xticks(counts, [str(c) for c in counts])
            ax.minorticks_off()
            ax.set_xlabel("processes (GPUs)")
        speed.yaxis.set_major_formatter(TOKENS)
        speed.set_ylabel("tokens/s per process")
        speed.set_title(f"Weak scaling ({_device(found)})")
        efficiency.axhline(100, color="black", linestyle=":", linewidth=0.8)
        efficiency.set_ylabel("scaling efficiency (%)")
        efficiency.set_ylim(0, 110)
        efficiency.legend(frameon=False, fontsize=7)
    return fig

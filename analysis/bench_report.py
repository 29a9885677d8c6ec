"""``ablate report --bench DIR``: the benchmark records of a folder as one Markdown page with figures.

    <out>/README.md                  provenance of every record, then each table and figure with a caption
    <out>/figures/prefill.{png,svg}  Fig. 3 style: prefill tokens/s and peak memory against context
    <out>/figures/context.{png,svg}  Fig. 2 style: the longest context, measured beside the accounting
    <out>/figures/train.{png,svg}    training tokens/s and peak memory, ours beside the anchors

Tables (Markdown, in README.md): prefill (context x arm x implementation: tokens/s, ours/it, peak memory
beside weights, KV cache and Mamba state), decode (batch, ms/step, tokens/s, x transformers and how far
the tokens agree), the context search, bench train (ours and its anchors), bench scale and bench scan (one
layer's selective scan per backend). A table or figure whose
records are absent is left out and the page says so. The page carries no time stamp and the SVGs no date,
so re-rendering unchanged records changes no file; the folder is assembled beside ``out`` and swapped in
whole (:func:`harness.atomic.atomic_directory`), and records are only read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from analysis import fig_bench
from analysis.bench_records import BenchRecord, load_records
from analysis.style import save_figure
from harness.atomic import atomic_directory
from harness.config_errors import ConfigError

FIGURE_FORMATS = ("png", "svg")
GIB, MIB = 2**30, 2**20
DASH = "—"


def _grid(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows),
    ]


def _num(value: float | None, fmt: str) -> str:
    return DASH if value is None else format(value, fmt)


def _of(records: list[BenchRecord], kind: str) -> list[BenchRecord]:
    return [r for r in records if r.kind == kind]


def provenance_table(records: list[BenchRecord]) -> list[str]:
    kernels = ("torch", "transformers", "mamba_ssm", "causal_conv1d", "liger_kernel")  # which paths ran
    head = ["record", "kind", "preset", "device", *kernels, "commit", "time"]
    rows = []
    for r in records:
        v, commit = r.data["versions"], r.data["commit"]
        rows.append(
            [
                f"`{r.path.name}`",
                r.kind,
                r.preset,
                r.data["device"],
                *(str(v.get(name) or DASH) for name in kernels),
                (commit[:7] + (" (dirty)" if r.data.get("dirty") else "")) if commit else DASH,
                r.data["time"],
            ]
        )
    return _grid(head, rows)


def prefill_table(records: list[BenchRecord]) -> list[str]:
    head = [
        "context",
        "arm",
        "implementation",
        "tokens/s",
        "ours / it",
        "peak GiB",
        "weights GiB",
        "KV cache MiB",
        "Mamba state MiB",
    ]
    keyed = []
    for r in _of(records, "prefill"):
        for row in r.rows:
            failed = row.get("error")
            implementation = r.implementation(row)
            order = (row["context"], r.preset, not implementation.startswith("ours"), implementation)
            keyed.append(
                (
                    order,
                    [
                        fig_bench.context_text(row["context"]),
                        r.preset,
                        implementation,
                        failed or f"{row['tokens_per_s']:,.0f}",
                        _num(row.get("ours_over"), ".2f"),
                        _num(None if failed or row["peak_bytes"] is None else row["peak_bytes"] / GIB, ".2f"),
                        f"{row['weights_bytes'] / GIB:.2f}",
                        f"{row['kv_cache_bytes'] / MIB:,.1f}",
                        f"{row['mamba_state_bytes'] / MIB:,.1f}",
                    ],
                )
            )
    out = _grid(head, [cells for _, cells in sorted(keyed)])
    for r in _of(records, "prefill"):
        out += [f"- {r.preset}: {a['implementation']} not timed: {a['skipped']}" for a in _skipped(r)]
    return out


def _skipped(record: BenchRecord) -> list[dict]:
    return [a for a in record.data.get("anchors", []) if "skipped" in a]


def _first(divergence: list[int | None] | None) -> str:
    """The earliest first-differing step over the batch rows ("none" when every row agrees)."""
    if divergence is None:
        return DASH
    steps = [d for d in divergence if d is not None]
    return f"{min(steps)} ({len(steps)}/{len(divergence)} rows)" if steps else "none"


def decode_table(records: list[BenchRecord]) -> list[str]:
    head = [
        "arm",
        "batch",
        "prompt + new",
        "ms/step",
        "decode tokens/s",
        "end-to-end tokens/s",
        "transformers tokens/s",
        "x transformers",
        "same tokens as transformers",
        "first differing step",
        "same as uncached",
        "first flip (uncached)",
    ]
    rows = []
    for r in _of(records, "decode"):
        for row in r.rows:
            share = row.get("tokens_equal_share")
            uncached = row.get("tokens_equal_uncached_share")
            rows.append(
                [
                    r.preset + (" (CUDA graphs)" if r.data["cuda_graphs"] else ""),
                    str(row["batch"]),
                    f"{row['prompt']} + {row['new']}",
                    f"{row['ms_per_step']:.2f}",
                    f"{row['decode_tokens_per_s']:,.0f}",
                    f"{row['end_to_end_tokens_per_s']:,.0f}",
                    _num(row.get("transformers_end_to_end_tokens_per_s"), ",.0f"),
                    _num(row.get("speedup_vs_transformers"), ".1f"),
                    _num(None if share is None else 100 * share, ".1f") + ("%" if share is not None else ""),
                    _first(row.get("first_divergence_transformers")),
                    _num(None if uncached is None else 100 * uncached, ".1f")
                    + ("%" if uncached is not None else ""),
                    _first(row.get("first_divergence_uncached")),
                ]
            )
    out = _grid(head, rows)
    out += [
        f"- {r.preset}: transformers not timed: {r.data['transformers_skipped']}"
        for r in _of(records, "decode")
        if r.data.get("transformers_skipped")
    ]
    return out


def context_table(records: list[BenchRecord]) -> list[str]:
    head = ["arm", "prefill", "budget GiB", "longest context (measured)", "accounting's prediction"]
    head.append("fits when")
    rows = []
    for r in sorted(_of(records, "context"), key=lambda r: (r.preset, r.prefill_pass)):
        d = r.data
        measured = DASH if d["max_context"] is None else f"{d['max_context']:,}"
        predicted = d["predicted_max_context"]
        rows.append(
            [
                r.preset,
                r.prefill_pass,
                f"{d['budget_bytes'] / GIB:.2f}",
                (">= " if d["hit_limit"] else "") + measured,
                "unbounded (no KV cache)" if predicted is None else f"{predicted:,}",
                d["criterion"],
            ]
        )
    return _grid(head, rows)


def train_table(records: list[BenchRecord]) -> list[str]:
    head = ["arm", "model", "params", "tokens/s", "step ms", "MFU", "peak GiB", "loss", "ours / it"]
    rows, notes = [], []
    for r in _of(records, "train"):
        config = r.data["config"]
        arm = f"{r.preset} (batch {config['batch']} x {config['seq_len']})"
        for row in r.rows:
            if "skipped" in row:
                notes.append(f"- {arm}: {row['model']} not timed: {row['skipped']}")
                continue
            rows.append(
                [
                    arm,
                    row.get("label", row["model"]),
                    f"{row['params'] / 1e9:.3f}B",
                    f"{row['tokens_per_s']:,.0f}",
                    f"{row['step_ms']:.1f}",
                    _num(None if row.get("mfu") is None else 100 * row["mfu"], ".1f")
                    + ("%" if row.get("mfu") is not None else ""),
                    _num(row.get("peak_gib"), ".1f"),
                    f"{row['loss']:.3f}",
                    _num(row.get("ours_over"), ".2f"),
                ]
            )
    return _grid(head, rows) + notes


def scale_table(records: list[BenchRecord]) -> list[str]:
    head = ["arm", "strategy", "processes", "tokens/s", "per process", "efficiency", "step ms", "peak GiB"]
    head.append("comm")
    rows, notes = [], []
    for r in _of(records, "scale"):
        config = r.data["config"]
        arm = f"{r.preset} (batch {config['batch_per_process']} x {config['seq_len']} per process)"
        for row in r.rows:
            if "error" in row:
                notes.append(f"- {arm}: {row['strategy']} x{row['processes']} failed: {row['error']}")
                continue
            rows.append(
                [
                    arm,
                    row["strategy"],
                    str(row["processes"]),
                    f"{row['tokens_per_s']:,.0f}",
                    f"{row['tokens_per_s_per_process']:,.0f}",
                    _num(None if row.get("efficiency") is None else 100 * row["efficiency"], ".0f") + "%",
                    f"{1000 * row['step_s']:.1f}",
                    _num(row.get("peak_mem_gib"), ".1f"),
                    _num(None if row.get("comm_share") is None else 100 * row["comm_share"], ".0f") + "%",
                ]
            )
    return _grid(head, rows) + notes


def scan_table(records: list[BenchRecord]) -> list[str]:
    head = ["layer", "backend", "fwd ms", "bwd ms", "total ms", "tokens/s", "vs first", "1st call s"]
    head += ["peak GiB", "largest difference from the first"]
    rows = []
    for r in _of(records, "scan"):
        c = r.data["config"]
        shape = f"{c['d_inner']} x {c['d_state']}, batch {c['batch']} x {c['seq_len']}"
        layer = f"{r.preset}: {shape}, {c['dtype']}"
        for row in r.rows:
            worst = max(row["max_rel_diff"].items(), key=lambda kv: kv[1], default=(DASH, 0.0))
            rows.append(
                [
                    layer,
                    row["backend"],
                    f"{row['fwd_ms']:.2f}",
                    f"{row['bwd_ms']:.2f}",
                    f"{row['total_ms']:.2f}",
                    f"{row['tokens_per_s']:,.0f}",
                    f"{row['speedup']:.2f}x",
                    f"{row['first_call_s']:.1f}",
                    _num(row["peak_gib"], ".2f"),
                    f"{worst[0]} {worst[1]:.1e}",
                ]
            )
    return _grid(head, rows)


SCAN_CAPTION = (
    "`ablate bench scan`: one Mamba layer's selective-scan call (D, the z gate, delta's bias and softplus "
    "fused), forward and backward, every backend timed in the same run, interleaved, best of the repeats; "
    "vs first: speed over the record's first backend (mamba_ssm's kernel on a GPU); 1st call: compile and "
    "autotuning; the difference is relative to the first backend's largest value, over the output and every "
    "input's gradient."
)

SCALE_CAPTION = (
    "`ablate bench scale`: weak scaling, every process training the same batch per step, so N processes "
    "train N times the tokens; efficiency is tokens/s per process over the smallest count's; step: the "
    "slowest rank's; peak: the largest rank's; comm: NCCL kernels' share of GPU time (CUDA only)."
)

PREFILL_TABLE_CAPTION = (
    "Batch-1 prefill of one context into a fresh cache, logits of the last position only; best of the "
    "record's repeats. ours / it: our tokens/s over the anchor's at the same context."
)
PREFILL_CAPTION = (
    "Batch-1 prefill of one context into a fresh cache, logits of the last position only. Left: tokens/s "
    "(log-2 context axis); right: peak allocator memory, the thin line of "
    "the same look the accounting's weights + KV cache + Mamba state, so the gap is activations. An anchor "
    "(`ablate bench prefill --against`) is its own series, named `<arm> <implementation>`."
)
CONTEXT_CAPTION = (
    "The longest batch-1 prefill that fit in the budget (doubling, then bisection to the record's "
    "resolution), beside the accounting's prediction from weights + KV cache + Mamba state alone: the "
    "prediction leaves out the prefill's transient activations, which set the measured limit at this scale."
)
DECODE_CAPTION = (
    "Greedy decoding after the prompt: ms per step and tokens/s of our decoder, end to end beside "
    "transformers' `generate` on the same weights. On random bf16 weights the top logits are near ties, so "
    "the two greedy sequences part at the first near-tied step (the earliest over the batch rows is shown) "
    "and the share of equal tokens says little; 'same as uncached' checks every decoded token against our "
    "own uncached forward pass on the same prefix (records written before that check show —)."
)

TRAIN_CAPTION = (
    "`ablate bench train`: each group is one record, an arm at one batch size, with every row timed in the "
    "same run on the same batches (bf16 weights, fused AdamW, steps after warm-up). Colour: the model "
    "(ours, transformers' Jamba, mamba_ssm, Llama); ours / it on an anchor's bar is the record's first row "
    "of ours over that anchor. Right: peak allocator memory."
)


def _figures(records: list[BenchRecord]) -> list[tuple[str, str, str, Callable[[], Figure]]]:
    """(file stem, title, caption, draw) of each figure the records support."""
    figures = []
    if _of(records, "prefill"):
        figures.append(
            (
                "prefill",
                "Prefill throughput against context (cf. the paper's Fig. 3)",
                PREFILL_CAPTION,
                lambda: fig_bench.prefill_throughput(records),
            )
        )
    if _of(records, "context"):
        figures.append(
            (
                "context",
                "Longest context that fits (cf. the paper's Fig. 2)",
                CONTEXT_CAPTION,
                lambda: fig_bench.max_context(records),
            )
        )
    if _of(records, "train"):
        figures.append(
            (
                "train",
                "Training throughput beside the anchors",
                TRAIN_CAPTION,
                lambda: fig_bench.train_throughput(records),
            )
        )
    if _of(records, "scale"):
        figures.append(
            ("scale", "Scaling over the GPUs of one node", SCALE_CAPTION, lambda: fig_bench.scaling(records))
        )
    return figures


def bench_page(records: list[BenchRecord], source: str, figure_files: dict[str, list[str]]) -> str:
    """README.md of the report: provenance, tables, figures (linked from ``figure_files``)."""
    out = [
        f"# Benchmarks: {source}",
        "",
        f"Rendered by `ablate report --bench {source}` from the {len(records)} record(s) below; every number "
        "is read from them (randomly initialised models: speed and memory do not depend on the weights).",
        "",
        "## Records",
        "",
        *provenance_table(records),
        "",
    ]
    sections = [
        ("prefill", "Prefill", PREFILL_TABLE_CAPTION, prefill_table),
        ("decode", "Decode", DECODE_CAPTION, decode_table),
        ("context", "Longest context", CONTEXT_CAPTION, context_table),
        (
            "train",
            "Training throughput (`ablate bench train`)",
            "Ours and its anchors, same batches.",
            train_table,
        ),
        ("scale", "Scaling (`ablate bench scale`)", SCALE_CAPTION, scale_table),
        ("scan", "Selective scan, kernel level (`ablate bench scan`)", SCAN_CAPTION, scan_table),
    ]
    for kind, title, caption, table in sections:
        out += [f"## {title}", ""]
        if not _of(records, kind):
            out += [f"No `{kind}` records.", ""]
            continue
        out += [caption, "", *table(records), ""]
    for stem, title, caption, _ in _figures(records):
        files = figure_files[stem]
        out += [f"## {title}", "", f"![{title}]({files[0]})", "", caption, ""]
        out += ["Files: " + ", ".join(f"[{Path(f).suffix[1:]}]({f})" for f in files), ""]
    return "\n".join(out)


def build_bench_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the records in ``folder`` to ``out`` (default ``<folder>/report``) and return
    its README.md; raises :class:`ConfigError` naming the file of a malformed record."""
    folder = Path(folder)
    records = load_records(folder)
    out = Path(out) if out is not None else folder / "report"
    if out.resolve() in {r.path.resolve() for r in records}:
        raise ConfigError(f"--out {out} is a benchmark record; choose a folder")
    with atomic_directory(out) as tmp:
        figure_files = {}
        for stem, _, _, draw in _figures(records):
            (tmp / "figures").mkdir(exist_ok=True)
            fig = draw()
            figure_files[stem] = [f"figures/{stem}.{fmt}" for fmt in FIGURE_FORMATS]
            for rel in figure_files[stem]:
                save_figure(fig, tmp / rel)
        (tmp / "README.md").write_text(bench_page(records, str(folder), figure_files) + "\n")
    return out / "README.md"

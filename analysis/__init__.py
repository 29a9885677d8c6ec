"""The analysis layer: the paper's tables and figures regenerated from run directories, beside the paper's
numbers. It reads run directories only (run.json, config.yaml, status.json, metrics.jsonl, events.jsonl,
evals/*.json, evals/attention_maps.npz, tokenizer/) and sweep files to find them; never a checkpoint, a model
or a training module.

    runs.py          find runs (sweep files, sweep folders, run dirs) and what each run is
    results.py       evals/<suite>.json payloads -> tidy rows
    frames.py        the tidy DataFrames: runs, steps, evals, events, heads, curves, expert load, answers
    paper.yaml/.py   the paper's values with provenance, metrics, claims, figures
    measure.py       each metric per run (or the reason it is missing), aggregated per arm
    stats.py         estimates over seeds, differences with 95% intervals
    tables.py        paper tables and generic tables (ours beside the paper's)
    render.py        Markdown, CSV, LaTeX, terminal and HTML tables
    claims.py        the paper's claims: supported / not supported / inconclusive
    style.py, fig_training.py, fig_icl.py, attention_maps.py   figures
    report.py, page.py, cli.py                                  ``ablate report``
    heads.py, fig_heads.py      attention heads per arm and single-head figures (notebooks/attention_heads)
    notebooks.py                run, render and strip the notebooks (``ablate notebook``)
"""

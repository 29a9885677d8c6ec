"""The calibrated recall study (results/recall/): Zoology's Fig. 2 and its companions, from run directories.

Every run of an MQAR sweep becomes one row of :func:`recall_table` (its task, arm, width, state size,
learning rate, how far it trained, whether it stopped early, its held-out accuracy in training and its test
accuracy from the ``mqar`` suite); :func:`best_of_grid` picks, per (task, arm, width), the learning rate
with the best held-out accuracy, as zoology reports its sweeps, and says which it picked among which; the
figure draws the picks in Fig. 2's form (accuracy against d_model, one panel per task).

The selection reads the held-out (validation) stream the run was early-stopped on, and the reported
accuracy is the ``mqar`` suite's test stream, which neither training nor selection saw. Everything is read
from the run directories (config.yaml, status.json, metrics.jsonl, evals/mqar.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.frames import Frames
from harness.config_loader import load_yaml

COLUMNS = (
    "sweep", "task", "arm", "pattern", "d_model", "d_state", "lr", "seed", "run_id", "state", "step",
    "total_steps", "epochs", "stopped_early", "val_accuracy", "test_accuracy", "test_queries", "run_dir",
)  # fmt: skip
GROUP = ("sweep", "task", "arm", "d_model", "d_state")


def _task_of(config: dict) -> tuple[str, int, int, int | None] | None:
    """``(name, seq_len, num_pairs, num_examples)`` of a run trained on one MQAR task (None otherwise)."""
    corpora = [c for c in (config.get("data") or {}).get("train") or [] if c.get("mqar")]
    if len(corpora) != 1:
        return None
    mqar = corpora[0]["mqar"]
    lengths, pairs = mqar.get("seq_lens") or [config["train"]["seq_len"]], mqar["num_pairs"]
    if len(lengths) != 1 or len(pairs) != 1:
        return None
    return f"L{lengths[0]}_N{pairs[0]}", lengths[0], pairs[0], mqar.get("num_examples")


def recall_table(frames: Frames) -> pd.DataFrame:
    """One row per run trained on a single MQAR task (see the module docstring), in the frames' order."""
    rows = []
    steps = frames.steps
    evals = frames.evals
    for run in frames.runs.itertuples():
        run_dir = Path(run.run_dir)
        try:
            config = load_yaml(run_dir / "config.yaml")
        except Exception:
            continue
        task = _task_of(config)
        if task is None:
            continue
        name, _length, _pairs, examples = task
        status = (
            json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}
        )
        held = steps[(steps.run_id == run.run_id) & steps.val_accuracy.notna()]
        test = evals[(evals.run_id == run.run_id) & (evals.suite == "mqar") & (evals.task == name)]
        test = test[test.metric == "accuracy"]
        train = config["train"]
        step = int(status.get("step") or 0)
        model = config["model"]
        rows.append(
            {
                "sweep": run.sweep,
                "task": name,
                "arm": run.arm,
                "pattern": model.get("pattern"),
                "d_model": model["d_model"],
                "d_state": (model.get("mamba") or {}).get("d_state")
                if "M" in model.get("pattern", "")
                else None,
                "lr": config["optim"]["lr"],
                "seed": run.seed,
                "run_id": run.run_id,
                "state": run.state,
                "step": step,
                "total_steps": train.get("steps"),
                "epochs": step * train["global_batch"] / examples if examples else None,
                "stopped_early": bool(status.get("stopped_early")),
                "val_accuracy": float(held.val_accuracy.iloc[-1]) if len(held) else None,
                "test_accuracy": float(test.value.iloc[0]) if len(test) else None,
                "test_queries": int(test.n.iloc[0]) if len(test) and pd.notna(test.n.iloc[0]) else None,
                "run_dir": str(run_dir),
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def best_of_grid(table: pd.DataFrame) -> pd.DataFrame:
    """Per (sweep, task, arm, d_model, d_state): the finished run with the best held-out accuracy over the
    learning rates (ties: the smaller rate), with ``lrs`` (every rate of the cell) and ``lrs_done`` (those
    finished). Cells with no finished run keep a row with no pick, so a gap is visible."""
    out = []
    keys = [k for k in GROUP if k in table]
    for key, cell in table.groupby(keys, dropna=False, sort=True):
        done = cell[(cell.state == "done") & cell.val_accuracy.notna()]
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row.update(lrs=sorted(cell.lr.tolist()), lrs_done=sorted(done.lr.tolist()))
        if len(done):
            best = done.sort_values(["val_accuracy", "lr"], ascending=[False, True]).iloc[0]
            row.update(
                best_lr=best.lr,
                val_accuracy=best.val_accuracy,
                test_accuracy=best.test_accuracy,
                epochs=best.epochs,
                stopped_early=best.stopped_early,
                run_id=best.run_id,
            )
        out.append(row)
    return pd.DataFrame(out)


ARM_STYLE = {  # colour and marker per arm: attention, Mamba and the two hybrids
    "attention": ("#1f77b4", "o"),
    "mamba": ("#d62728", "s"),
    "mamba-attention": ("#2ca02c", "^"),
    "attention-mamba": ("#9467bd", "v"),
}


def fig2(best: pd.DataFrame) -> Figure:
    """Zoology's Fig. 2 form: test accuracy of each arm's best learning rate against d_model, one panel
    per task (ordered by length), d_model on a log axis."""
    tasks = sorted(best.task.unique(), key=lambda t: (int(t.split("_")[0][1:]), int(t.split("_N")[1])))
    fig = Figure(figsize=(4.2 * max(1, len(tasks)), 3.6), constrained_layout=True)
    axes = fig.subplots(1, max(1, len(tasks)), squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=False):
        cell = best[(best.task == task) & best.test_accuracy.notna()]
        for arm, rows in cell.groupby("arm", sort=False):
            rows = rows.sort_values("d_model")
            colour, marker = ARM_STYLE.get(arm, (None, "x"))
            ax.plot(rows.d_model, rows.test_accuracy, marker=marker, color=colour, label=arm)
        seq_len, pairs = task.split("_")
        ax.set_title(f"{seq_len[1:]} tokens, {pairs[1:]} pairs")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("d_model")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("MQAR accuracy (best learning rate)")
    axes[-1].legend(loc="lower right", fontsize=8)
    return fig

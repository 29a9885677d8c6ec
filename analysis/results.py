"""``evals/<suite>.json`` payloads flattened into tidy rows: one row per (suite, task, metric).

Each suite nests its numbers differently (evals/perplexity.py, lm_eval_suites.py, icl.py, probes.py,
attention.py, mqar.py, niah.py, position_loss.py); this is the one place that knows those shapes. Every row
carries the standard error and sample count when the payload allows one (lm-eval's stderr; a binomial one for
IMDB's proportions), the shots, the checkpoint step and the spec hash, and a task that did not run (e.g.
"unavailable offline") becomes a row with that status and the reason, never a silent gap. Suites not known
here still contribute their flat ``metrics`` mapping. Only ``evals/*.json`` is read: ``evals/adhoc/`` holds
evaluations with non-planned settings, which tables must not mix in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

NAN = float("nan")


def _row(task: str, metric: str, value: Any, **extra: Any) -> dict[str, Any]:
    number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else NAN
    return {"task": task, "metric": metric, "value": number, "status": "ok", **extra}


def _missing(task: str, metric: str, status: str, reason: str) -> dict[str, Any]:
    return {"task": task, "metric": metric, "value": NAN, "status": status, "note": reason}


def _lm_eval(payload: dict) -> list[dict]:
    rows = []
    ses = []
    for task, r in payload.get("tasks", {}).items():
        if r.get("status") != "ok":
            rows.append(_missing(task, r.get("metric", ""), r.get("status", "missing"), r.get("reason", "")))
            continue
        rows.append(
            _row(
                task,
                r["metric"],
                r.get("value"),
                stderr=r.get("stderr"),
                n=r.get("n"),
                shots=r.get("num_fewshot"),
            )
        )
        ses.append(r.get("stderr"))
    average = payload.get("average")
    available = payload.get("average_available")
    over = payload.get("average_over") or []
    if average is not None or available is not None:
        se = (
            math.sqrt(sum(s * s for s in ses)) / len(ses) if ses and all(s is not None for s in ses) else None
        )
        note = (
            ""
            if average is not None
            else f"partial: mean over {', '.join(over)} (missing {payload.get('missing')})"
        )
        rows.append(
            _row(
                "average",
                "average",
                average if average is not None else available,
                stderr=se,
                n=len(over),
                note=note,
                partial=average is None,
            )
        )
    return rows


def _perplexity(payload: dict) -> list[dict]:
    rows = []
    for corpus, r in payload.get("corpora", {}).items():
        for metric in ("logprob_per_byte", "bits_per_byte", "tokens_per_byte"):
            if metric in r:
                rows.append(_row(corpus, metric, r[metric], n=r.get("documents"), detail=r.get("source", "")))
    return rows


def _binomial_se(p: float, n: int | None) -> float | None:
    """Standard error of a proportion of ``n`` (Agresti-Coull: two successes and two failures added, so that
    0% or 100% of a small sample does not claim zero uncertainty)."""
    if not n or not 0 <= p <= 1:
        return None
    adjusted = (p * n + 2) / (n + 4)
    return math.sqrt(adjusted * (1 - adjusted) / (n + 4))


def _icl(payload: dict) -> list[dict]:
    rows = []
    for task, r in payload.get("tasks", {}).items():
        if "metrics" not in r or r.get("status", "ok") != "ok":  # QuAC / NarrativeQA offline: their F1
            rows.append(_missing(task, "f1", r.get("status", "missing"), r.get("reason", "")))
            continue
        n = r.get("queries") or r.get("questions")
        for metric, value in r["metrics"].items():
            se = _binomial_se(value, n) if task == "imdb" else None
            rows.append(_row(task, metric, value, stderr=se, n=n, shots=r.get("shots", 0)))
    return rows


def _induction(payload: dict) -> list[dict]:
    rows = []
    parts = {
        "induction": payload.get("induction", {}),
        "mqar": payload.get("mqar", {}),
        "natural": payload.get("natural_text", {}),
    }
    for key, value in payload.get("metrics", {}).items():
        task, _, metric = key.partition("/")
        rows.append(
            _row(
                task,
                metric,
                value,
                n=parts.get(task, {}).get("sequences") or parts.get(task, {}).get("windows"),
            )
        )
    natural = parts["natural"]
    if natural.get("status") not in (None, "ok"):
        rows.append(_missing("natural", "icl_score", natural["status"], natural.get("reason", "")))
    return rows


def _attention(payload: dict) -> list[dict]:
    if payload.get("status") != "ok":
        return [_missing("attention", "", payload.get("status", "missing"), payload.get("reason", ""))]
    n = (payload.get("settings") or {}).get("sequences")
    return [_row("attention", metric, value, n=n) for metric, value in payload.get("metrics", {}).items()]


def _mqar(payload: dict) -> list[dict]:
    """Task ``mqar``: accuracy over all tasks and on the hardest; then one task per (length, pairs), named
    ``L<seq_len>_N<num_pairs>``, with accuracy (binomial s.e. over its queries), accuracy among the
    sequence's own values, that chance, and the answers' loss."""
    summary = ("accuracy", "min_accuracy")  # of the flat metrics; the per-task ones come from ``tasks``
    rows = [
        _row("mqar", key.rpartition("/")[2], value)
        for key, value in (payload.get("metrics") or {}).items()
        if key.rpartition("/")[2] in summary
    ]
    for task in payload.get("tasks", []):
        name, n = f"L{task['seq_len']}_N{task['num_pairs']}", task.get("queries")
        for metric in ("accuracy", "accuracy_among_values", "chance_among_values", "answer_loss"):
            if metric in task:
                se = _binomial_se(task[metric], n) if metric.startswith("accuracy") else None
                rows.append(_row(name, metric, task[metric], stderr=se, n=n))
    return rows


def _retrieval(payload: dict) -> list[dict]:
    """niah / passkey: task ``retrieval`` with the mean accuracy, the trained length and the mean accuracy
    of the cells within it and past it (prompt length <= or > the trained length; absent where no cell
    is); then one task per cell, ``L<length>_D<depth>``, with its accuracy (binomial s.e. over prompts)."""
    settings = payload.get("settings") or {}
    trained = settings.get("trained_length")
    rows = [_row("retrieval", "accuracy", payload.get("metrics", {}).get(f"{settings.get('task')}/accuracy"))]
    rows.append(_row("retrieval", "trained_length", trained))
    cells = payload.get("cells", [])
    if trained:
        for name, keep in (
            ("within", lambda c: c["length"] <= trained),
            ("beyond", lambda c: c["length"] > trained),
        ):
            picked = [c["accuracy"] for c in cells if keep(c)]
            if picked:
                rows.append(_row("retrieval", f"accuracy_{name}", sum(picked) / len(picked), n=len(picked)))
    for cell in cells:
        n = cell.get("samples")
        name = f"L{cell['length']}_D{cell['depth']:g}"
        rows.append(_row(name, "accuracy", cell["accuracy"], stderr=_binomial_se(cell["accuracy"], n), n=n))
    return rows


def _position_loss(payload: dict) -> list[dict]:
    """Task ``position_loss``: within, beyond, delta and the trained length; then one task per position
    bin, named ``P<from>_<to>``, with its mean loss (n: documents)."""
    settings = payload.get("settings") or {}
    rows = [_row("position_loss", k.rpartition("/")[2], v) for k, v in (payload.get("metrics") or {}).items()]
    rows.append(_row("position_loss", "trained_length", settings.get("trained_length")))
    n = settings.get("documents")
    rows += [_row(f"P{b['from']}_{b['to']}", "loss", b["loss"], n=n) for b in payload.get("bins", [])]
    return rows


def _generic(payload: dict) -> list[dict]:
    rows = []
    for key, value in (payload.get("metrics") or {}).items():
        task, _, metric = key.rpartition("/")
        rows.append(_row(task or payload.get("suite", ""), metric, value))
    return rows


FLATTENERS: dict[str, Callable[[dict], list[dict]]] = {
    "ollm": _lm_eval,
    "ablation": _lm_eval,
    "perplexity": _perplexity,
    "icl": _icl,
    "induction": _induction,
    "attention": _attention,
    "mqar": _mqar,
    "niah": _retrieval,
    "passkey": _retrieval,
    "position_loss": _position_loss,
}


def eval_rows(suite: str, payload: dict) -> list[dict[str, Any]]:
    """Tidy rows of one suite's payload, each with the result's checkpoint step and spec hash."""
    rows = FLATTENERS.get(suite, _generic)(payload)
    common = {"suite": suite, "step": payload.get("step"), "spec_hash": payload.get("spec_hash")}
    out = []
    for row in rows:
        full = {"stderr": None, "n": None, "shots": None, "note": "", **row, **common}
        if full["shots"] is None:
            full["shots"] = payload.get("shots")
        out.append(full)
    return out


def head_rows(payload: dict) -> list[dict[str, Any]]:
    """The attention suite's per-head scores (layer, head, induction, previous-token, label attention)."""
    return [dict(h) for h in payload.get("heads", [])] if payload.get("status") == "ok" else []


def induction_curve_rows(payload: dict) -> list[dict[str, Any]]:
    """Per-position loss on EOS + random tokens + the same tokens (the in-context learning curve)."""
    ind = payload.get("induction") or {}
    half = ind.get("half_len")
    return [
        {
            "position": j + 1,
            "loss": loss,
            "copy": "first" if j + 1 <= half else "repeat",
            "half_len": half,
            "uniform_loss": ind.get("uniform_loss"),
        }
        for j, loss in enumerate(ind.get("loss_curve", []))
    ]


def off_format_rows(payload: dict) -> list[dict[str, Any]]:
    """IMDB's most frequent off-format answers with their counts and the number of queries."""
    imdb = (payload.get("tasks") or {}).get("imdb") or {}
    return [
        {"answer": answer, "count": count, "queries": imdb.get("queries")}
        for answer, count in imdb.get("off_format_answers", [])
    ]

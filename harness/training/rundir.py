"""One self-describing directory per run, shared by the trainer, the launcher, evaluations and analysis.

    <run_dir>/
      run.json         what the run is: run id, sweep, arm (verbatim), grid point, seed, model facts, and
                       the evaluation plan with its hash (harness/training/record.py)
      config.yaml      the fully resolved run config (model pattern expanded, every default filled in)
      status.json      state (pending/running/done/failed/stopped), step, tokens, last loss, updated_at
      metrics.jsonl    one JSON object per logged training step
      events.jsonl     notable events: start, resume, loss spike, eval, checkpoint, NaN stop, finish
      checkpoints/     step_XXXXXXXX/ directories, each complete or absent (atomic rename)
      tokenizer/       the tokenizer the run trained with
      logs/            stdout/stderr of launched jobs
      evals/           <suite>.json results of the planned evaluations; adhoc/ for others
      .lock            held by the one process writing the directory (trainer, evaluation, launcher)

Every file that is rewritten (config, status) is written atomically (:mod:`harness.atomic`); JSONL files
are append-only, flushed per line.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import yaml

from harness.atomic import atomic_write_text
from harness.locks import current_holder, exclusive

LOCK_FILE = ".lock"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (from a killed writer) is ignored."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class RunDir:
    """Paths and small I/O helpers of one run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def evals(self) -> Path:
        return self.root / "evals"

    def create(self) -> None:
        for d in (self.root, self.checkpoints, self.logs, self.evals):
            d.mkdir(parents=True, exist_ok=True)

    def write_config(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.config, yaml.safe_dump(data, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config.read_text())

    def lock(self, purpose: str) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """Hold the directory's one-writer lock, or raise :class:`harness.locks.LockBusy` naming the live
        holder (re-entrant within a process; released however the holder dies)."""
        return exclusive(self.root / LOCK_FILE, purpose)

    def holder(self) -> dict[str, Any] | None:
        """Who holds the directory's lock right now (None: nobody)."""
        return current_holder(self.root / LOCK_FILE)

    def read_record(self) -> dict[str, Any] | None:
        """run.json, or None for directories written before runs recorded themselves."""
        if not self.record.exists():
            return None
        return json.loads(self.record.read_text())

    def write_record(self, record: dict[str, Any]) -> None:
        """Write run.json (keeping the first ``created_at``)."""
        old = self.read_record() or {}
        now = time.time()
        full = {**record, "created_at": old.get("created_at", now), "updated_at": now}
        atomic_write_text(self.record, json.dumps(full, indent=2) + "\n")

    def status(self) -> dict[str, Any]:
        if not self.status_file.exists():
            return {"state": "pending"}
        return json.loads(self.status_file.read_text())

    def set_status(self, **fields: Any) -> None:
        status = self.status()
        status.update(fields, updated_at=time.time())
        atomic_write_text(self.status_file, json.dumps(status, indent=2))

    def append(self, path: Path, record: dict[str, Any]) -> None:
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def event(self, kind: str, **fields: Any) -> None:
        self.append(self.events, {"event": kind, "time": time.time(), **fields})

    def truncate_metrics_after(self, step: int) -> None:
        """Drop metrics logged after ``step`` (by a run killed after its last checkpoint) before resuming,
        so the log reads as one uninterrupted run."""
        records = [r for r in read_jsonl(self.metrics) if r.get("step", 0) <= step]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in records))

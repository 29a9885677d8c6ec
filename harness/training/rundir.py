"""One self-describing directory per run, shared by the trainer, the launcher, evaluations and analysis.

    <run_dir>/
      run.json         what the run is: run id, sweep, arm (verbatim), grid point, seed, model facts, the
                       evaluation plan with its hash (harness/training/record.py), and the software stack
                       of the latest training session (harness/environment.py)
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

A state file that cannot be read (truncated by a full disk, edited by hand, copied half way) raises
:class:`DamagedFile`: one line naming the file, what is wrong and what to do. ``ablate sweep status`` shows
such a run as ``damaged`` and the others normally; a damaged JSONL line is skipped with a one-line warning.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from harness.atomic import atomic_write_text
from harness.config_errors import ConfigError
from harness.locks import current_holder, exclusive

LOCK_FILE = ".lock"


class DamagedFile(ConfigError):
    """A state file the harness wrote cannot be read; the message names it, says what is wrong and what to
    do, in one line (printed like a configuration error: no traceback)."""

    def __init__(self, path: str | Path, problem: str, advice: str):
        self.path = Path(path)
        self.problem = problem
        self.advice = advice
        super().__init__(f"{path} is damaged ({problem}): {advice}")


def json_problem(e: ValueError) -> str:
    if isinstance(e, json.JSONDecodeError):
        if not e.doc.strip():
            return "empty"
        return f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno}); truncated?"
    return f"not valid JSON: {e}"


def read_state_json(path: Path, advice: str) -> dict[str, Any] | None:
    """A JSON object written by the harness (None when the file does not exist), or DamagedFile."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise DamagedFile(path, f"unreadable: {e}", advice) from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise DamagedFile(path, json_problem(e), advice) from None
    if not isinstance(data, dict):
        raise DamagedFile(path, f"a JSON {type(data).__name__}, not an object", advice)
    return data


_warned: set[str] = set()


def warn_damage(message: str) -> None:
    """Print a one-line warning about damaged state (once per message and process) to stderr."""
    if message not in _warned:
        _warned.add(message)
        print(f"ablate: warning: {message}", file=sys.stderr, flush=True)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file. A torn last line (from a killed writer, or one being written) is ignored;
    a complete line that is not a JSON object is skipped with a one-line warning naming the file and line."""
    if not path.exists():
        return []
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        warn_damage(f"{path} cannot be read ({e}); its records are left out")
        return []
    records = []
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif number < len(lines):  # a complete line (the last one has no newline yet: torn or in progress)
            warn_damage(
                f"{path}: line {number} is damaged (not a JSON object) and skipped; the other lines are read"
            )
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
        """config.yaml (through the YAML gate), or DamagedFile."""
        from harness.yaml_gate import load_yaml

        try:
            return load_yaml(self.config)
        except ConfigError as e:
            raise DamagedFile(
                self.config,
                e.message,
                "the run's experiment cannot be read: restore the file, or delete the run directory to start "
                "the run over",
            ) from None

    def lock(self, purpose: str) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """Hold the directory's one-writer lock, or raise :class:`harness.locks.LockBusy` naming the live
        holder (re-entrant within a process; released however the holder dies)."""
        return exclusive(self.root / LOCK_FILE, purpose)

    def holder(self) -> dict[str, Any] | None:
        """Who holds the directory's lock right now (None: nobody)."""
        return current_holder(self.root / LOCK_FILE)

    def read_record(self) -> dict[str, Any] | None:
        """run.json, or None for directories written before runs recorded themselves (DamagedFile when it
        cannot be read)."""
        return read_state_json(
            self.record,
            "relaunch the sweep (`ablate sweep launch` rewrites it) or delete it (`ablate train` "
            "writes a new one)",
        )

    def write_record(self, record: dict[str, Any]) -> None:
        """Write run.json (keeping the first ``created_at``, and the ``environment`` the trainer recorded
        unless ``record`` brings one; a damaged one is replaced)."""
        try:
            old = self.read_record() or {}
        except DamagedFile:
            old = {}
        now = time.time()
        kept = {"environment": old["environment"]} if "environment" in old else {}
        full = {**kept, **record, "created_at": old.get("created_at", now), "updated_at": now}
        atomic_write_text(self.record, json.dumps(full, indent=2) + "\n")

    def record_environment(self, stack: dict[str, Any]) -> dict[str, Any] | None:
        """Put the software stack of this training session into run.json (``environment``); returns the
        one recorded before (None if none was)."""
        try:
            record = self.read_record() or {}
        except DamagedFile:
            record = {}
        before = record.get("environment")
        self.write_record({**record, "environment": stack})
        return before

    def status(self) -> dict[str, Any]:
        """status.json (``{"state": "pending"}`` before there is one), or DamagedFile."""
        status = read_state_json(
            self.status_file,
            "delete it, or relaunch: the run resumes from its newest good checkpoint and rewrites it",
        )
        return {"state": "pending"} if status is None else status

    def set_status(self, **fields: Any) -> None:
        """Update status.json (a damaged one is replaced by ``fields``)."""
        try:
            status = self.status()
        except DamagedFile:
            status = {}
        status.update(fields, updated_at=time.time())
        atomic_write_text(self.status_file, json.dumps(status, indent=2))

    def append(self, path: Path, record: dict[str, Any]) -> None:
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def rebuilt_status(self, newest_checkpoint_step: int = 0) -> dict[str, Any]:
        """What status.json said, rebuilt from the rest of the directory, for a damaged one: done at the
        step of the last ``finish`` event when no session started after it (``stopped_early`` kept), else
        interrupted at the newest good checkpoint's step (the caller verifies it), else pending; the name
        and config hash from run.json, the loss of the last logged step up to there."""
        events = read_jsonl(self.events)
        try:
            record = self.read_record() or {}
        except DamagedFile:  # then the status keeps no name or config hash; the rest still says where it is
            record = {}
        last_start = max(
            (i for i, e in enumerate(events) if e.get("event") in ("start", "resume")), default=-1
        )
        finish = next((e for e in reversed(events[last_start + 1 :]) if e.get("event") == "finish"), None)
        stopped = next((e for e in reversed(events) if e.get("event") == "stopped_early"), None)
        if finish is not None:
            status = {"state": "done", "step": int(finish.get("step", 0)), "tokens": finish.get("tokens")}
            if stopped is not None and stopped.get("step") == finish.get("step"):
                status["stopped_early"] = {k: stopped.get(k) for k in ("metric", "value")}
        elif newest_checkpoint_step > 0:
            status = {"state": "interrupted", "step": newest_checkpoint_step}
        else:
            status = {"state": "pending", "step": 0}
        losses = [r for r in read_jsonl(self.metrics) if "loss" in r and r.get("step", 0) <= status["step"]]
        if losses:
            status["loss"] = losses[-1]["loss"]
            status.setdefault("tokens", losses[-1].get("tokens"))
        for key in ("name", "config_hash"):
            if record.get(key):
                status[key] = record[key]
        return {
            **{k: v for k, v in status.items() if v is not None},
            "rebuilt": True,
            "updated_at": time.time(),
        }

    def event(self, kind: str, **fields: Any) -> None:
        self.append(self.events, {"event": kind, "time": time.time(), **fields})

    def truncate_metrics_after(self, step: int) -> None:
        """Drop metrics logged after ``step`` (by a run killed after its last checkpoint) before resuming,
        so the log reads as one uninterrupted run."""
        records = [r for r in read_jsonl(self.metrics) if r.get("step", 0) <= step]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in records))

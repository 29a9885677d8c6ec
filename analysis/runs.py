"""Finding run directories (from sweep files, sweep folders or run directories) and reading what each is.

A run's identity comes from ``run.json`` when the directory has one (sweep, verbatim arm, grid point, seed,
model facts, eval plan, the sweep's ``compare:``). Older directories have no run.json; then the sweep file
that led here supplies the arm, seed and eval plan, and a directory found on its own falls back to its
parent folder's name as the sweep and its own name minus the ``-<12 hex run id>`` as the arm (a slug:
``1to7`` for ``1:7``; ``arm_source`` says so). Model facts are then computed from ``config.yaml`` with the
accounting's arithmetic (no model is built). Nothing here reads checkpoints or imports training code.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config_errors import ConfigError
from harness.config_schema import from_dict, to_dict
from harness.yaml_gate import load_yaml

RUN_DIR_NAME = re.compile(r"^(?P<slug>.+)-(?P<run_id>[0-9a-f]{12})$")
CONTEXT_256K = 262144


@dataclass
class RunRef:
    """Where a run directory is expected, and what the sweep file that named it says about it."""

    path: Path
    sweep: str | None = None
    sweep_file: str | None = None
    sweep_description: str = ""
    arm: str | None = None
    seed: int | None = None
    grid_point: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    planned_suites: list[str] | None = None
    compare: Any = None  # the sweep file's raw `compare:` list, if it has one
    config: dict[str, Any] | None = None  # the resolved run config the sweep file gives it


@dataclass
class RunInfo:
    """Everything the analysis knows about one run without reading its metrics or results."""

    path: Path
    run_id: str
    sweep: str
    arm: str
    arm_source: str  # run.json | sweep file | directory name (slug)
    seed: int | None
    grid_point: dict[str, Any]
    state: str  # not launched | pending | running | interrupted | done | failed (status.json)
    step: int = 0
    total_steps: int | None = None
    tokens: int = 0
    tokens_planned: int | None = None
    name: str = ""
    config_hash: str | None = None
    pattern: str | None = None
    shorthand: str | None = None
    params_total: int | None = None
    params_active: int | None = None
    kv_cache_256k: int | None = None
    error: str = ""
    eval_errors: dict[str, str] = field(default_factory=dict)
    planned_suites: list[str] | None = None
    suite_hashes: dict[str, str] = field(default_factory=dict)  # run.json eval_plan: suite -> spec hash
    sweep_file: str | None = None
    sweep_description: str = ""
    compare: Any = None
    compare_source: str | None = None  # the file the `compare:` above was read from (for its errors)
    created_by: str | None = None
    # The resolved config its sweep file gives a run (None for directories found on their own): what a run
    # not launched yet will be, for analyses that show a grid's coverage.
    planned_config: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """The arm with its grid point: what a table row aggregates over seeds."""
        grid = " ".join(f"{k.split('.')[-1]}={v}" for k, v in self.grid_point.items())
        return f"{self.arm} {grid}".strip()


def _read_sweep(path: Path, root: str | Path) -> list[RunRef]:
    """The runs a sweep file expands to, with their expected directories under ``root``."""
    from sweeps.config import expand_sweep, load_sweep

    sweep = load_sweep(path)
    compare = to_dict(sweep.compare) or None
    refs = []
    for run in expand_sweep(sweep, source=str(path)):
        refs.append(
            RunRef(
                path=Path(root) / sweep.name / run.dir_name,
                sweep=sweep.name,
                sweep_file=str(path.resolve()),
                sweep_description=sweep.description,
                arm=run.arm,
                seed=run.seed,
                grid_point=dict(run.grid_point),
                run_id=run.run_id,
                planned_suites=list(sweep.evals),
                compare=compare,
                config=to_dict(run.config),
            )
        )
    return refs


def find_runs(sources: list[str | Path], root: str | Path = "runs") -> list[RunRef]:
    """Run references from sweep files (``*.yaml``), sweep folders (holding run directories) and run
    directories, in the order given, without duplicates."""
    refs: list[RunRef] = []
    for source in sources:
        path = Path(source)
        if path.suffix in (".yaml", ".yml"):
            if not path.is_file():
                raise ConfigError(
                    "sweep file not found; give a sweep file (e.g. sweeps/table4-tiny.yaml), a sweep folder "
                    "(runs/<sweep>) or run directories",
                    source=path,
                )
            refs.extend(_read_sweep(path, root))
        elif (path / "config.yaml").is_file():
            refs.append(RunRef(path=path))
        elif path.is_dir() and any((p / "config.yaml").is_file() for p in path.iterdir()):
            refs.extend(RunRef(path=p) for p in sorted(path.iterdir()) if (p / "config.yaml").is_file())
        else:
            raise ConfigError(
                "not a sweep file, a sweep folder or a run directory (no config.yaml here or one level "
                "down); run `ablate sweep status SWEEP.yaml` to see where its runs are",
                source=path,
            )
    seen: set[Path] = set()
    unique = []
    for ref in refs:
        key = ref.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(ref)
    return unique


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _config(path: Path) -> tuple[dict[str, Any], str]:
    """A run's config.yaml (through the YAML gate) and, when it cannot be read, why."""
    if not path.is_file():
        return {}, ""
    try:
        return load_yaml(path), ""
    except ConfigError as e:
        return {}, f"{path} is damaged ({e.message})"


def _model_facts(model: dict[str, Any]) -> dict[str, Any]:
    """Pattern, shorthand, parameters and the 256K-token KV cache of a resolved model config."""
    from harness.accounting import plan_model
    from harness.model.config import ModelConfig

    try:
        plan = plan_model(from_dict(ModelConfig, copy.deepcopy(model)), context=CONTEXT_256K)
    except (ConfigError, TypeError, KeyError):
        return {"pattern": model.get("pattern")}
    return {
        "pattern": plan.pattern,
        "shorthand": plan.shorthand,
        "params_total": plan.params_total,
        "params_active": plan.params_active,
        "kv_cache_256k": plan.kv_cache_bytes,
    }


def _planned_steps(train: dict[str, Any]) -> tuple[int | None, int | None]:
    per_step = (train.get("seq_len") or 0) * (train.get("global_batch") or 0)
    if train.get("steps"):
        return train["steps"], train["steps"] * per_step or None
    if train.get("tokens") and per_step:
        steps = math.ceil(train["tokens"] / per_step)
        return steps, steps * per_step
    return None, None


def read_run(ref: RunRef) -> RunInfo:
    """What ``ref``'s directory says about the run; a directory that does not exist yet is 'not launched'."""
    path = ref.path
    match = RUN_DIR_NAME.match(path.name)
    record = _json(path / "run.json")
    status = _json(path / "status.json")
    config, damaged = _config(path / "config.yaml")
    sweep_rec = record.get("sweep") or {}

    if record:
        arm, arm_source = record.get("arm") or "", "run.json"
    elif ref.arm is not None:
        arm, arm_source = ref.arm, "sweep file"
    else:
        arm = match["slug"] if match else path.name
        arm_source = "directory name (slug)"
    seed = record.get("seed", ref.seed)
    if seed is None:
        seed = (config.get("train") or {}).get("seed")
    run_id = record.get("run_id") or ref.run_id or (match["run_id"] if match else None)
    run_id = run_id or status.get("config_hash") or path.name

    facts = _model_facts(config["model"]) if config.get("model") else {}
    facts.update({k: v for k, v in (record.get("model") or {}).items() if v is not None})
    total_steps, tokens_planned = _planned_steps(config.get("train") or {})
    train_rec = record.get("train") or {}
    plan = record.get("eval_plan") or {}
    suites = plan.get("suites")
    state = status.get("state", "pending") if path.is_dir() else "not launched"
    return RunInfo(
        path=path,
        run_id=run_id,
        sweep=sweep_rec.get("name") or ref.sweep or path.resolve().parent.name,
        arm=arm,
        arm_source=arm_source,
        seed=seed,
        grid_point=record.get("grid_point") or ref.grid_point,
        state=state,
        step=int(status.get("step") or 0),
        total_steps=status.get("total_steps") or train_rec.get("steps") or total_steps,
        tokens=int(status.get("tokens") or 0),
        tokens_planned=train_rec.get("tokens") or tokens_planned,
        name=record.get("name") or status.get("name") or config.get("name", ""),
        config_hash=record.get("config_hash") or status.get("config_hash"),
        pattern=facts.get("pattern"),
        shorthand=facts.get("shorthand"),
        params_total=facts.get("params_total"),
        params_active=facts.get("params_active"),
        kv_cache_256k=facts.get("kv_cache_256k"),
        error=damaged or status.get("error", ""),
        eval_errors=dict(status.get("eval_errors") or {}),
        planned_suites=list(suites) if suites is not None else ref.planned_suites,
        suite_hashes={s: v.get("hash") for s, v in (suites or {}).items() if isinstance(v, dict)},
        sweep_file=sweep_rec.get("file") or ref.sweep_file,
        sweep_description=sweep_rec.get("description") or ref.sweep_description,
        # The sweep file given to the report says which tables to draw, as it is now (a table added to it
        # after the runs were launched included); without one, what the launcher recorded in run.json.
        compare=ref.compare if ref.compare is not None else sweep_rec.get("compare"),
        compare_source=ref.sweep_file if ref.compare is not None else str(path / "run.json"),
        created_by=record.get("created_by"),
        planned_config=ref.config,
    )


def load_runs(sources: list[str | Path], root: str | Path = "runs") -> list[RunInfo]:
    """Every run named by ``sources`` (see :func:`find_runs`), read."""
    return [read_run(ref) for ref in find_runs(sources, root)]

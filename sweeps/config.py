"""Sweep files: one YAML file names a whole ablation; :func:`expand_sweep` turns it into resolved runs.

```yaml
name: table4-ratio
description: attention:Mamba ratio at 1.3B (the paper's Table 4)
base:                                  # a run config (harness/training/config.py) shared by every run
  model: {preset: 1.3b-1to7}
  data: {train: [{name: c4}], tokenizer: {kind: bpe, vocab_size: 65536}}
  train: {seq_len: 2048, global_batch: 1024, micro_batch: 8, tokens: 250000000000}
arms:                                  # named variants, each merged onto base
  attention: {model: {preset: 1.3b-attention}}
  "1:7": {model: {preset: 1.3b-1to7}}
grid:                                  # optional axes: dotted key -> values (cartesian product)
  optim.lr: [3.0e-4, 6.0e-4]
seeds: [0]
evals: [perplexity, ablation, icl]     # suites run after training, in the same job (evals/suites.py)
eval_options: {ablation: {limit: 1000}} # per-suite settings (evals/options.py)
resources: {nodes: 4, gpus_per_node: 8, cpus_per_task: 12, time: "72:00:00", partition: gpu}
compare:                               # which paper tables the runs reproduce (for `ablate report`)
  - {table: table4, baseline: attention, rows: {attention: Attention, "1:7": "Jamba a:m=1:7"}}
```

Every run is ``base`` <- ``arms[arm]`` <- one grid point <- ``train.seed``, validated strictly as a run
config. Its ``run_id`` is a hash of the resolved config (run-time settings aside), so an edited arm gets a
new id (and a new run directory, ``<arm>-<run_id>``) while untouched arms keep theirs. The evaluation plan
(``evals`` + ``eval_options``) is not part of the run id: editing it re-runs just the affected suites.
Errors name the sweep file, the key path (``arms.mamba.model.d_ff``) and the offending value, and suggest
the nearest valid key.

Command-line overrides (``ablate sweep launch FILE train.steps=100``, harness/overrides.py) edit the file's
data before it is validated, exactly as an edit of the file would.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.plan import resolve_plan
from evals.suites import get_suite
from harness.config_errors import ConfigError, shown
from harness.config_schema import bounded, deep_merge, from_dict, short_hash
from harness.overrides import Override, apply_sweep_overrides, as_overrides, blamed
from harness.training.config import MAX_NAME_CHARS, RunConfig, config_hash, resolve_run_config
from harness.yaml_gate import load_yaml

# SLURM's default MaxArraySize is 1001, and every run is a training job: a sweep beyond this is a mistake
# (a grid axis with a typo'd range), refused before it is expanded.
MAX_SWEEP_RUNS = 1000
MAX_ARM_CHARS = 100


@dataclass
class ResourcesConfig:
    """What each run asks SLURM for, and the assumptions behind the GPU-hour estimate."""

    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: int | None = bounded(None, ge=1)
    # HH:MM:SS, D-HH:MM:SS or minutes.
    time: str | int = "01:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    # Runs of the sweep that train at once: SLURM's array %N; with the local executor, the slots that every
    # local launch under the same runs root shares (the others wait in line, by launch order once waiting).
    array_parallelism: int = 64
    # Processes per node; default one per GPU (or one on a CPU-only run). Each joins torch.distributed.
    tasks_per_node: int | None = None
    # SLURM signals the job this many seconds before its time limit; the run checkpoints and requeues.
    signal_delay_s: int = 90
    # How many time-outs a run may requeue after before it is left interrupted (relaunch resumes it).
    max_requeues: int = 100
    extra_sbatch: dict[str, Any] = field(default_factory=dict)
    gpu_type: str = "h100"
    assumed_mfu: float = bounded(0.4, gt=0, le=1)

    def __post_init__(self) -> None:
        for name in ("nodes", "cpus_per_task", "array_parallelism", "signal_delay_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", key=name)
        if self.tasks_per_node is not None and self.tasks_per_node < 1:
            raise ConfigError(f"must be >= 1, got {self.tasks_per_node}", key="tasks_per_node")
        if self.max_requeues < 0:
            raise ConfigError(f"must be >= 0, got {self.max_requeues}", key="max_requeues")
        if self.gpus_per_node < 0:
            raise ConfigError(f"must be >= 0, got {self.gpus_per_node}", key="gpus_per_node")
        if not 0 < self.assumed_mfu <= 1:
            raise ConfigError(f"must be in (0, 1], got {self.assumed_mfu}", key="assumed_mfu")
        _ = self.time_minutes  # validates the format

    @property
    def time_minutes(self) -> int:
        if isinstance(self.time, int):
            minutes = self.time
        else:
            m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2}):(\d{2})", self.time.strip())
            if not m:
                raise ConfigError(
                    f"time {self.time!r} must be minutes or HH:MM:SS (or D-HH:MM:SS), e.g. '48:00:00'",
                    key="time",
                )
            days, hours, mins, secs = (int(g) if g else 0 for g in m.groups())
            minutes = days * 1440 + hours * 60 + mins + (1 if secs else 0)
        if minutes < 1:
            raise ConfigError(f"time must be at least one minute, got {self.time!r}", key="time")
        return minutes

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def processes_per_node(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)


@dataclass
class CompareConfig:
    """One paper table (or figure) that this sweep's runs reproduce; ``ablate report`` puts the paper's
    values beside ours (the tables are defined in analysis/)."""

    table: str  # e.g. table4, table6, table7, table8, fig8
    baseline: str | None = None  # the arm that deltas are computed against
    rows: dict[str, str] = field(default_factory=dict)  # arm -> the paper's row name (default: by arm name)


@dataclass
class SweepConfig:
    name: str
    base: dict[str, Any]
    description: str = ""
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    evals: list[str] = field(default_factory=list)
    # Per-suite settings passed to the evaluation, e.g. {ollm: {limit: 50}, icl: {shots: 4}}.
    eval_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    compare: list[CompareConfig] = field(default_factory=list)
    # The command-line overrides applied to the file; not a key of the file.
    overrides: list[Override] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name) or len(self.name) > MAX_ARM_CHARS:
            raise ConfigError(
                f"name {shown(self.name)} must be letters, digits, '.', '_' or '-', starting with a letter "
                f"or digit, at most {MAX_ARM_CHARS} characters (it names the folder runs/<name>)",
                key="name",
            )
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one, e.g. [0]", key="seeds")
        for seed in self.seeds:
            if self.seeds.count(seed) > 1:
                raise ConfigError(f"seeds lists {seed} twice; each seed is one run", key="seeds")
        for arm in self.arms:
            if len(arm_slug(arm)) > MAX_ARM_CHARS:
                raise ConfigError(
                    f"arm name {shown(arm)} is longer than {MAX_ARM_CHARS} characters (it names the run "
                    "directories)",
                    key=f"arms.{arm}",
                )
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid axis '{key}' needs a non-empty list of values", key=f"grid.{key}")
            for i, value in enumerate(values):
                if value in values[:i]:
                    raise ConfigError(
                        f"grid axis '{key}' lists {shown(value)} twice; each value is one run",
                        key=f"grid.{key}",
                    )
        runs = len(self.arms or {"": {}}) * math.prod(len(v) for v in self.grid.values()) * len(self.seeds)
        if runs > MAX_SWEEP_RUNS:
            shape = " x ".join(
                [f"{len(self.arms or [''])} arm(s)"]
                + [f"{len(v)} {k} values" for k, v in self.grid.items()]
                + [f"{len(self.seeds)} seed(s)"]
            )
            raise ConfigError(
                f"the sweep expands to {runs:,} runs ({shape}); at most {MAX_SWEEP_RUNS} per sweep file: "
                "split it or shorten a grid axis",
                key="grid" if self.grid else "seeds",
            )
        for suite, options in self.eval_options.items():
            if not isinstance(options, dict):
                raise ConfigError("must be a mapping of option -> value", key=f"eval_options.{suite}")
        arms = set(self.arms) or {""}
        for i, cmp in enumerate(self.compare):
            for arm in [cmp.baseline, *cmp.rows] if cmp.baseline is not None else list(cmp.rows):
                if arm not in arms:
                    raise ConfigError(
                        f"arm '{arm}' is not one of the sweep's arms ({', '.join(sorted(arms))})",
                        key=f"compare[{i}]",
                    )

    def eval_plan(self, source: str | None = None) -> dict[str, Any]:
        """The evaluation plan: ``{suite: resolved options}`` (evals.plan), checked strictly."""
        for suite in self.evals:
            try:
                get_suite(suite)
            except ConfigError as e:
                raise ConfigError(e.message, source=source, key="evals") from None
        return resolve_plan(self.evals, self.eval_options, source=source)


@dataclass
class SweepRun:
    """One expanded run: where it came from, its resolved config and its identity."""

    arm: str
    grid_point: dict[str, Any]
    seed: int
    config: RunConfig
    run_id: str

    @property
    def label(self) -> str:
        parts = [self.arm] if self.arm else []
        parts += [f"{k.split('.')[-1]}={v}" for k, v in self.grid_point.items()]
        parts.append(f"seed={self.seed}")
        return " ".join(parts)

    @property
    def dir_name(self) -> str:
        """``<arm>-<run_id>``, the arm made safe for a path (:func:`arm_slug`); the arm itself, verbatim,
        is in the run's run.json."""
        return f"{arm_slug(self.arm) if self.arm else 'run'}-{self.run_id}"


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    *parents, leaf = dotted.split(".")
    for i, key in enumerate(parents):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            where = ".".join(parents[: i + 1])
            setter = "seeds set" if dotted == "train.seed" else f"grid axis '{dotted}' sets"
            raise ConfigError(
                f"expected a mapping, got {type(node).__name__} {shown(node)} ({setter} '{dotted}' in it)",
                key=where,
            )
    node[leaf] = value
    return out


def load_sweep(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> SweepConfig:
    """Read and check a sweep file: its schema, and its evaluation plan (suite names and options). With
    command-line ``overrides`` (``key=value``, harness/overrides.py) the file's data is edited first and
    every run is checked as well, so that an error names the override it comes from."""
    if not overrides:
        sweep = from_dict(SweepConfig, load_yaml(path), source=str(path))
        sweep.eval_plan(source=str(path))
        return sweep
    parsed = as_overrides(overrides)
    with blamed(str(path), parsed):
        sweep = from_dict(SweepConfig, sweep_data(path, parsed), source=str(path))
        sweep.overrides = parsed
        sweep.eval_plan(source=str(path))
        expand_sweep(sweep, source=str(path))
    return sweep


def sweep_data(path: str | Path, overrides: list[Override]) -> dict[str, Any]:
    """A sweep file's data with command-line ``overrides`` applied (what ``sweep.yaml`` records)."""
    with blamed(str(path), overrides):
        return apply_sweep_overrides(load_yaml(path), overrides, SweepConfig, RunConfig)


def expand_sweep(sweep: SweepConfig, source: str | None = None) -> list[SweepRun]:
    """Every run of the sweep, validated. Raises ConfigError naming the key of the first problem where its
    value sits in the file (``base.optim.lr``, ``arms.mamba.model.d_ff``, ``grid.optim.lr``)."""
    arms = sweep.arms or {"": {}}
    axes = list(sweep.grid.items())
    runs: list[SweepRun] = []
    for arm, override in arms.items():
        if not isinstance(override, dict):
            raise ConfigError(
                f"arm '{arm}' must be a mapping of run-config overrides", source=source, key=f"arms.{arm}"
            )
        for point in itertools.product(*(values for _, values in axes)):
            grid_point = dict(zip((k for k, _ in axes), point, strict=True))
            for seed in sweep.seeds:
                try:
                    data = deep_merge(copy.deepcopy(sweep.base), override)
                    for key, value in grid_point.items():
                        data = _set_dotted(data, key, value)
                    data = _set_dotted(data, "train.seed", seed)
                    data["name"] = _run_name(sweep.name, arm, grid_point, seed)
                    cfg = resolve_run_config(data)
                except ConfigError as e:
                    raise locate_error(e, sweep, arm, grid_point, source) from None
                runs.append(SweepRun(arm, grid_point, seed, cfg, config_hash(cfg)))
    _refuse_collisions(runs, source)
    return runs


def check_runs(sweep: SweepConfig, runs: list[SweepRun], source: str | None = None) -> None:
    """:func:`harness.training.preflight.check_before_writing` for every run (tokenizer against model
    vocabulary, MQAR tasks, batch geometry against the processes of ``resources``): what ``launch`` and
    ``plan`` check before anything is written."""
    from harness.training.preflight import check_before_writing

    world_size = sweep.resources.nodes * sweep.resources.processes_per_node
    for run in runs:
        try:
            check_before_writing(run.config, world_size)
        except ConfigError as e:
            if e.key == "train.global_batch" and world_size > 1:
                e = ConfigError(f"{e.message} (resources: {world_size} processes per run)", key=e.key)
            raise locate_error(e, sweep, run.arm, run.grid_point, source) from None


def _run_name(sweep_name: str, arm: str, grid_point: dict[str, Any], seed: int) -> str:
    name = "-".join(p for p in (sweep_name, arm_slug(arm), *_grid_slugs(grid_point), f"s{seed}") if p)
    if len(name) > MAX_NAME_CHARS:  # long grid values: cut, and keep names distinct with a hash
        name = f"{name[: MAX_NAME_CHARS - 13]}-{short_hash(name)}"
    return name


def _has_key(data: Any, dotted: str) -> bool:
    """Whether ``data`` holds the run-config key ``dotted`` (``data.train[0].weight``)."""
    node = data
    for part in dotted.split("."):
        name, *indices = part.split("[")
        if name:
            if not isinstance(node, dict) or name not in node:
                return False
            node = node[name]
        for index in indices:
            index = index.rstrip("]")
            if not index.isdigit() or not isinstance(node, list) or int(index) >= len(node):
                return False
            node = node[int(index)]
    return True


def _longest_prefix(data: Any, dotted: str) -> int:
    parts = dotted.split(".")
    return max((n for n in range(1, len(parts) + 1) if _has_key(data, ".".join(parts[:n]))), default=0)


def locate_error(
    e: ConfigError, sweep: SweepConfig, arm: str, grid_point: dict[str, Any], source: str | None
) -> ConfigError:
    """``e`` (a run config's error, key relative to the run config) with its key where the value sits in
    the sweep file: a grid axis, ``seeds``, the arm's overrides or ``base``."""
    key = e.key
    override = sweep.arms.get(arm, {}) if arm else {}
    if key is None:
        where = f"arms.{arm}" if arm else "base"
        return ConfigError(f"{e.message} (in {where})", source=source, key=where)
    for axis, value in grid_point.items():
        if key == axis or key.startswith((f"{axis}.", f"{axis}[")):
            return ConfigError(
                f"{e.message} (grid point {axis}={shown(value)})", source=source, key=f"grid.{axis}"
            )
    if key == "train.seed":
        return ConfigError(e.message, source=source, key="seeds")
    if key == "name":
        return ConfigError(
            f"{e.message} (the run name is made from the sweep's name, arm and grid point)",
            source=source,
            key="name",
        )
    in_arm, in_base = _has_key(override, key), _has_key(sweep.base, key)
    if not in_arm and not in_base:  # a value from a preset or a default: the closest key that is set
        in_arm = _longest_prefix(override, key) >= max(1, _longest_prefix(sweep.base, key))
    if arm and in_arm:
        return ConfigError(
            f"{e.message} (in arms.{arm}, merged onto base)", source=source, key=f"arms.{arm}.{key}"
        )
    inherited = f", inherited by arm '{arm}'" if arm else ""
    return ConfigError(f"{e.message} (in base{inherited})", source=source, key=f"base.{key}")


def arm_slug(text: str) -> str:
    """A name safe in paths and job names: ``:`` reads as ``to`` (``1:7`` -> ``1to7``), letters, digits,
    ``.``, ``_``, ``+`` and ``-`` stay, anything else becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text.replace(":", "to"))


def _grid_slugs(point: dict[str, Any]) -> list[str]:
    return [f"{k.split('.')[-1]}{arm_slug(str(v))}" for k, v in point.items()]


def _refuse_collisions(runs: list[SweepRun], source: str | None) -> None:
    """Two distinct runs never share a directory: arms whose names differ only in characters the slug
    replaces (``1:3`` and ``1;3``) would, so they are refused here, before anything is written."""
    seen: dict[str, SweepRun] = {}
    for run in runs:
        other = seen.setdefault(run.dir_name, run)
        if other is not run and other.arm == run.arm:
            raise ConfigError(
                f"runs {other.label} and {run.label} are the same run (run id {run.run_id}): a grid value "
                "sets a key to what it already is",
                source=source,
                key="grid",
            )
        if other is not run:
            raise ConfigError(
                f"arms '{other.arm}' and '{run.arm}' ({other.label} / {run.label}) would share the run "
                f"directory '{run.dir_name}': their names differ only in characters that are not safe in "
                "paths. Rename one of them",
                source=source,
                key=f"arms.{run.arm}",
            )

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
evals: [perplexity, ablation, icl]     # suites run after training, in the same job
eval_options: {ablation: {limit: 1000}} # per-suite settings
resources: {nodes: 4, gpus_per_node: 8, cpus_per_task: 12, time: "72:00:00", partition: gpu}
```

Every run is ``base`` <- ``arms[arm]`` <- one grid point <- ``train.seed``, validated strictly as a run
config. Its ``run_id`` is a hash of the resolved config, so an edited arm gets a new id (and a new run
directory) while untouched arms keep theirs. Errors name the sweep file, the key path (``arms.mamba.model.
d_ff``) and the offending value, and suggest the nearest valid key.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config_loader import ConfigError, deep_merge, did_you_mean, from_dict, load_yaml
from harness.training.config import RunConfig, config_hash, resolve_run_config

EVAL_SUITES = ("perplexity", "ollm", "ablation", "icl", "induction", "attention")


@dataclass
class ResourcesConfig:
    """What each run asks SLURM for, and the assumptions behind the GPU-hour estimate."""

    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: int | None = None
    # HH:MM:SS, D-HH:MM:SS or minutes.
    time: str | int = "01:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 64
    # Processes per node; default one per GPU (or one on a CPU-only run). Each joins torch.distributed.
    tasks_per_node: int | None = None
    # SLURM signals the job this many seconds before its time limit; the run checkpoints and requeues.
    signal_delay_s: int = 90
    # How many time-outs a run may requeue after before it is left interrupted (relaunch resumes it).
    max_requeues: int = 100
    extra_sbatch: dict[str, Any] = field(default_factory=dict)
    gpu_type: str = "h100"
    assumed_mfu: float = 0.4

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

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ConfigError(f"name {self.name!r} must be letters, digits, '.', '_' or '-'", key="name")
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one, e.g. [0]", key="seeds")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid axis '{key}' needs a non-empty list of values", key=f"grid.{key}")
        for suite in self.evals:
            if suite not in EVAL_SUITES:
                raise ConfigError(
                    f"unknown eval suite '{suite}'."
                    + did_you_mean(suite, EVAL_SUITES)
                    + f" Suites: {', '.join(EVAL_SUITES)}",
                    key="evals",
                )
        for suite, options in self.eval_options.items():
            if suite not in self.evals:
                raise ConfigError(
                    f"options for suite '{suite}', which is not in evals ({', '.join(self.evals) or 'none'})",
                    key=f"eval_options.{suite}",
                )
            if not isinstance(options, dict):
                raise ConfigError("must be a mapping of option -> value", key=f"eval_options.{suite}")


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
        safe_arm = re.sub(r"[^A-Za-z0-9._-]", "to", self.arm) if self.arm else "run"
        return f"{safe_arm}-{self.run_id}"


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"grid axis '{dotted}': '{key}' is not a mapping", key=f"grid.{dotted}")
    node[leaf] = value
    return out


def load_sweep(path: str | Path) -> SweepConfig:
    return from_dict(SweepConfig, load_yaml(path), source=str(path))


def expand_sweep(sweep: SweepConfig, source: str | None = None) -> list[SweepRun]:
    """Every run of the sweep, validated. Raises ConfigError naming the arm and key of the first problem."""
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
                data = deep_merge(copy.deepcopy(sweep.base), override)
                for key, value in grid_point.items():
                    data = _set_dotted(data, key, value)
                data = _set_dotted(data, "train.seed", seed)
                data["name"] = "-".join(
                    p for p in (sweep.name, _slug(arm), *_grid_slugs(grid_point), f"s{seed}") if p
                )
                try:
                    cfg = resolve_run_config(data)
                except ConfigError as e:
                    where = f"arms.{arm} merged onto base" if arm else "base"
                    key = e.key if not arm or not e.key else f"arms.{arm}.{e.key}"
                    raise ConfigError(f"{e.message} (in {where})", source=source, key=key) from None
                runs.append(SweepRun(arm, grid_point, seed, cfg, config_hash(cfg)))
    return runs


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "to", text)


def _grid_slugs(point: dict[str, Any]) -> list[str]:
    return [f"{k.split('.')[-1]}{_slug(str(v))}" for k, v in point.items()]

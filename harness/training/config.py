"""The run configuration: what ``ablate train CONFIG.yaml`` reads and what a run directory records.

```yaml
name: tiny-1to7
model: {preset: tiny-1to7}          # a preset plus overrides, or a full model config
data: {train: [{name: web}], validation: [{name: web}], tokenizer: {kind: bpe, vocab_size: 4096}}
train: {seq_len: 256, global_batch: 8, micro_batch: 8, steps: 200, seed: 0}
optim: {lr: 3e-3, weight_decay: 0.1, grad_clip: 1.0}
schedule: {kind: cosine, warmup_steps: 20}
tracking: {print_every: 10, tensorboard: true, wandb: true, wandb_mode: offline}   # run-time, optional
```

:func:`resolve_run_config` validates everything strictly and fills in every default, and
:func:`config_hash` fingerprints the resolved config, so two runs with equal hashes are the same
experiment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.config_errors import ConfigError, shown
from harness.config_schema import (
    bounded,
    deep_merge,
    from_dict,
    identity,
    later_field,
    runtime_field,
    short_hash,
)
from harness.data import DataConfig
from harness.model.config import ModelConfig
from harness.yaml_gate import load_yaml


@dataclass
class OptimConfig:
    """AdamW (fused on CUDA). Norm gains, biases, embeddings, A_log and D get no weight decay."""

    lr: float = bounded(3e-4, gt=0)
    beta1: float = bounded(0.9, ge=0, lt=1)
    beta2: float = bounded(0.95, ge=0, lt=1)
    eps: float = bounded(1e-8, gt=0)
    weight_decay: float = bounded(0.1, ge=0)
    # 0 disables clipping.
    grad_clip: float = bounded(1.0, ge=0)


@dataclass
class ScheduleConfig:
    """Linear warmup, then cosine decay to ``min_lr_ratio * lr``, or WSD (warmup-stable-decay: constant,
    then a linear decay over the last ``decay_fraction`` of training), or constant."""

    kind: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = bounded(100, ge=0)
    min_lr_ratio: float = bounded(0.1, ge=0, le=1)
    decay_fraction: float = bounded(0.2, gt=0, le=1)


@dataclass
class StopWhen:
    """Stop training early once an in-loop held-out metric crosses a threshold, checked at every held-out
    evaluation (``train.eval_every``): zoology's early stopping (``valid/accuracy > 0.99``). The run ends
    ``done`` at that step, with a checkpoint and a ``stopped_early`` event; relaunching it does nothing."""

    # val_accuracy: argmax accuracy on the held-out targets (MQAR's answers; next tokens for text).
    metric: Literal["val_accuracy", "val_loss"]
    above: float | None = None
    below: float | None = None

    def __post_init__(self) -> None:
        if (self.above is None) == (self.below is None):
            raise ConfigError("give exactly one of 'above' and 'below'", key="above")

    def met(self, value: float) -> bool:
        return value > self.above if self.above is not None else value < self.below  # type: ignore[operator]

    def describe(self) -> str:
        if self.above is not None:
            return f"{self.metric} > {self.above:g}"
        return f"{self.metric} < {self.below:g}"


@dataclass
class LoopConfig:
    """Batch geometry, length, precision, and the cadence of logging, evaluation and checkpoints."""

    seq_len: int = 256
    # Sequences per optimizer step over all ranks; micro_batch sequences per rank per forward pass.
    # Gradient accumulation = global_batch / (micro_batch * world_size).
    global_batch: int = 8
    micro_batch: int = 8
    # Exactly one of steps and tokens (tokens = steps * global_batch * seq_len).
    steps: int | None = None
    tokens: int | None = None
    seed: int = bounded(0, ge=0, le=2**32 - 1)
    # auto: bf16 autocast on CUDA, fp32 on CPU.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # The large projections' matmuls in float8 (torchao; harness/training/float8.py); needs float8 tensor
    # cores on CUDA and is fast under compile. Part of the run id: it changes the numerics.
    float8: bool = later_field(False)
    # Run-time settings (not part of the run id): torch.compile the model, and the device to train on.
    compile: bool = runtime_field(False)
    device: str = runtime_field("auto")
    log_every: int = 1
    # 0 means only at the end of training.
    eval_every: int = bounded(0, ge=0)
    eval_batches: int = 4
    # Early stopping on an in-loop held-out metric (needs eval_every); None: train all the steps.
    stop_when: StopWhen | None = later_field(None)
    # 0: only at the end (and when interrupted). keep_last 0 keeps every checkpoint.
    checkpoint_every: int = bounded(0, ge=0)
    keep_last: int = bounded(2, ge=0)
    # A loss above spike_factor x its exponential moving average (decay spike_ema) is recorded as a spike.
    spike_factor: float = bounded(1.5, gt=1)
    spike_ema: float = bounded(0.98, ge=0, lt=1)
    spike_warmup: int = bounded(20, ge=0)
    # Run-time settings too: how several ranks split the model (the losses agree within float tolerance)
    # and data-loader worker processes (the batches are identical for any count).
    distributed: Literal["auto", "none", "ddp", "fsdp"] = runtime_field("auto")
    num_workers: int = bounded(0, ge=0, runtime=True)

    def __post_init__(self) -> None:
        for name in ("seq_len", "global_batch", "micro_batch", "log_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", key=name)
        if (self.steps is None) == (self.tokens is None):
            raise ConfigError("give exactly one of 'steps' and 'tokens'", key="steps")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"must be >= 1, got {self.steps}", key="steps")
        if self.tokens is not None and self.tokens < 1:
            raise ConfigError(f"must be >= 1, got {self.tokens}", key="tokens")
        if self.stop_when is not None and not self.eval_every:
            raise ConfigError(
                "stop_when is checked at the held-out evaluations: set eval_every (steps between them)",
                key="stop_when",
            )
        if self.global_batch % self.micro_batch:
            raise ConfigError(
                f"global_batch={self.global_batch} must be a multiple of micro_batch={self.micro_batch}",
                key="global_batch",
            )

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @property
    def total_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, -(-self.tokens // self.tokens_per_step))


@dataclass
class TrackingConfig:
    """What reports on a run while it trains (harness/training/tracking.py); ``metrics.jsonl`` is written
    whatever these say and stays the source of truth.

    A run-time section: it never changes a run id, so tracking can be switched on or off when a run is
    resumed or relaunched (it is a separate section rather than part of ``train`` because it is neither the
    experiment nor how its numbers are computed, and so that a sweep sets it once for every run)."""

    # A plain progress line on stdout every N optimizer steps (and at the first and last step, and with
    # every held-out loss), whatever the terminal: what a SLURM job's .out file shows. 0: none.
    print_every: int = 10
    # TensorBoard event files in <run_dir>/tensorboard/ (needs the `tracking` extra).
    tensorboard: bool = False
    # A Weights & Biases run (files in <run_dir>/wandb/): project, group and name from the sweep and arm,
    # the config logged, a resumed run continues the same W&B run. Needs the `tracking` extra.
    wandb: bool = False
    # Default: the sweep name (`jamba-ablate` for a run of `ablate train`).
    wandb_project: str | None = None
    wandb_entity: str | None = None
    # offline writes the run to disk only (`wandb sync` uploads it later); default: W&B's own
    # (WANDB_MODE, else online).
    wandb_mode: Literal["online", "offline"] | None = None

    def __post_init__(self) -> None:
        if self.print_every < 0:
            raise ConfigError(
                f"must be >= 0 (0: no progress lines), got {self.print_every}", key="print_every"
            )


def resolve_model(
    section: dict[str, Any] | ModelConfig, source: str | None = None, path: str = "model"
) -> ModelConfig:
    """A model section is a full ModelConfig mapping, or ``preset: NAME`` plus overrides of its fields."""
    from harness.presets import preset_dict

    if isinstance(section, ModelConfig):
        return section
    if not isinstance(section, dict):
        raise ConfigError(
            f"expected a mapping (a preset and overrides, or a model config), got {type(section).__name__} "
            f"{shown(section)}",
            source=source,
            key=path,
        )
    section = dict(section)
    preset = section.pop("preset", None)
    if preset is not None:
        if not isinstance(preset, str):
            raise ConfigError(
                f"expected a preset name, got {type(preset).__name__} {shown(preset)} (see `ablate presets`)",
                source=source,
                key=f"{path}.preset",
            )
        try:
            base = preset_dict(preset)
        except ConfigError as e:
            raise ConfigError(e.message, source=source, key=f"{path}.preset") from None
        if "layout" in section or "pattern" in section:
            base.pop("pattern", None)
        section = deep_merge(base, section)
    return from_dict(ModelConfig, section, source=source, path=path)


@dataclass
class RunConfig:
    name: str
    # Read from a preset plus overrides, or a full model config, into a ModelConfig once, where the file is
    # read (resolve_model); everything downstream holds the resolved model.
    model: ModelConfig = field(
        metadata={"keys": ("preset", *ModelConfig.__dataclass_fields__), "resolve": resolve_model}
    )
    data: DataConfig
    train: LoopConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # Run-time (never part of the run id) and left out of config.yaml while it holds its defaults.
    tracking: TrackingConfig = runtime_field(default_factory=TrackingConfig, later=True)

    def __post_init__(self) -> None:
        check_path_component(self.name, "name", "runs/<name>-<run id>")


MAX_NAME_CHARS = 200


def check_path_component(name: str, key: str, where: str) -> None:
    """Refuse a name that is not safe as one path component (it names a directory, ``where``): no ``/`` or
    ``\\``, no control characters, not ``.`` or ``..`` or hidden, at most :data:`MAX_NAME_CHARS`."""
    problem = None
    if not name:
        problem = "is empty"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "contains a control character"
    elif name.startswith("."):
        problem = "starts with '.' (a hidden or parent directory)"
    elif len(name) > MAX_NAME_CHARS:
        problem = f"is {len(name)} characters long, more than {MAX_NAME_CHARS}"
    if problem:
        raise ConfigError(
            f"{shown(name)} {problem}; it names a directory ({where}), so it must be one safe path "
            "component: letters, digits, '.', '_', '-', e.g. 'tiny-1to7'",
            key=key,
        )


def resolve_run_config(data: dict[str, Any], source: str | None = None) -> RunConfig:
    """Validate a raw run config and return it with the model section fully resolved (presets expanded)."""
    return from_dict(RunConfig, data, source=source)


def load_run_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """A run config file, validated and resolved, with command-line ``overrides`` (``key=value``, see
    harness/overrides.py) applied first, so they are checked as strictly as the file itself."""
    from harness.overrides import apply_overrides, blamed, parse_overrides

    parsed = parse_overrides(overrides)
    with blamed(str(path), parsed):
        return resolve_run_config(apply_overrides(load_yaml(path), parsed, RunConfig), source=str(path))


def config_identity(cfg: RunConfig) -> dict[str, Any]:
    """What makes a run the experiment it is: the resolved config with run-time settings (device, scan
    backend, compile, distribution strategy, loader workers) at their defaults and ``tracking`` left out."""
    return identity(cfg)


def config_hash(cfg: RunConfig) -> str:
    """The run id: a fingerprint (12 hex digits) of :func:`config_identity`. Two runs with equal hashes are
    the same experiment; one trained on a GPU and resumed or evaluated on a CPU keeps its id."""
    return short_hash(config_identity(cfg))

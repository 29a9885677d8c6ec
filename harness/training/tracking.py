"""What a training run reports while it runs, besides ``metrics.jsonl`` (which stays the source of truth).

* **Progress lines.** Every ``tracking.print_every`` optimizer steps (and at the first and last step of a
  session, and whenever a held-out loss is computed) rank 0 prints one plain line on stdout, flushed,
  whatever the terminal, so a SLURM job's ``.out`` file shows the run as it trains::

      2025-06-01 12:00:00 table4-tiny-1to7-s0 step 40/150 | tokens 81.9K | loss 4.2134 | val 4.3012 |
      lr 2.87e-03 | grad norm 0.642 | 25.1K tok/s | MFU 31.0% | mem 2.34 GiB | ETA 0:00:41

  (one line). ``tok/s`` and MFU are averaged since the previous line; ``mem`` is the peak GPU memory of
  those steps on CUDA, the process's peak resident memory (``rss``) on a CPU; the ETA extrapolates this
  session's average time per step, evaluations included. On an interactive terminal the tqdm bar is shown
  as well (on stderr).
* **TensorBoard** (``tracking.tensorboard``): event files in ``<run_dir>/tensorboard/``, the scalars of every
  ``metrics.jsonl`` record (``train/*``, ``perf/*``, ``moe/*``, ``val/loss``) against the optimizer step. A
  resumed run purges what the killed one logged after its checkpoint (``purge_step``), so the curves read
  as one run.
* **Weights & Biases** (``tracking.wandb``): files in ``<run_dir>/wandb/``. Project:
  ``tracking.wandb_project``, else the sweep's name (``jamba-ablate`` for a run of ``ablate train``);
  group: the sweep and the arm with its grid point (the seeds of one arm share a group); name: arm, grid
  point and seed (the run's name for ``ablate train``); config: the resolved config and the run record
  (run id, arm verbatim, grid point, seed, model facts). The W&B run id is derived from the run directory
  (its run id and creation time in ``run.json``), so a resumed or requeued run continues the same W&B run
  (``resume="allow"``; offline, each session writes an ``offline-run-*`` folder with that id, which
  ``wandb sync`` appends in order).

Both integrations are optional (``pip install 'jamba-ablate[tracking]'``), off by default, imported only
when switched on, and run-time settings: switching them never changes a run id.
"""

from __future__ import annotations

import datetime
import math
import sys
import time
from typing import Any

from harness.config_errors import ConfigError
from harness.config_schema import to_dict
from harness.training.config import RunConfig, TrackingConfig
from harness.training.rundir import RunDir

_INSTALL_HINT = "pip install 'jamba-ablate[tracking]'"
DEFAULT_WANDB_PROJECT = "jamba-ablate"

# metrics.jsonl key -> TensorBoard / W&B scalar name.
SCALARS = {
    "loss": "train/loss",
    "ce_loss": "train/ce_loss",
    "aux_loss": "train/aux_loss",
    "lr": "train/lr",
    "grad_norm": "train/grad_norm",
    "tokens": "train/tokens",
    "tokens_per_s": "perf/tokens_per_s",
    "mfu": "perf/mfu",
    "peak_mem_gib": "perf/peak_mem_gib",
    "expert_load_max_over_mean": "moe/expert_load_max_over_mean",
    "val_loss": "val/loss",
}


def check_available(tracking: TrackingConfig) -> None:
    """Fail before any work when a switched-on integration is not installed."""
    wanted = {"tensorboard": tracking.tensorboard, "wandb": tracking.wandb}
    for module, on in wanted.items():
        if not on:
            continue
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(
                f"is true but {module} is not installed; install it with: {_INSTALL_HINT}",
                key=f"tracking.{module}",
            ) from None


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric values of a metrics.jsonl record under their tracking names."""
    out = {}
    for key, name in SCALARS.items():
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


# ------------------------------------------------------------------------------------- progress lines
def human(n: float) -> str:
    """1234 -> '1.2K', 3.4e6 -> '3.4M'."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def duration(seconds: float) -> str:
    """3725 -> '1:02:05'; 90061 -> '1d 1:01:01'."""
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86400)
    text = str(datetime.timedelta(seconds=rest))
    return f"{days}d {text}" if days else text


def format_line(
    name: str,
    step: int,
    total_steps: int,
    tokens: int,
    loss: float,
    *,
    val_loss: float | None = None,
    lr: float | None = None,
    grad_norm: float | None = None,
    tokens_per_s: float | None = None,
    mfu: float | None = None,
    mem_gib: float | None = None,
    mem_kind: str = "mem",
    eta_s: float | None = None,
    now: float | None = None,
) -> str:
    """One progress line; fields that are unknown (MFU on a CPU, the ETA at the first step) are left out."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    parts = [f"{stamp} {name} step {step}/{total_steps}", f"tokens {human(tokens)}", f"loss {loss:.4f}"]
    if val_loss is not None:
        parts.append(f"val {val_loss:.4f}")
    if lr is not None:
        parts.append(f"lr {lr:.2e}")
    if grad_norm is not None:
        parts.append(f"grad norm {grad_norm:.3f}")
    if tokens_per_s is not None:
        parts.append(f"{human(tokens_per_s)} tok/s")
    if mfu is not None:
        parts.append(f"MFU {mfu:.1%}")
    if mem_gib is not None:
        parts.append(f"{mem_kind} {mem_gib:.2f} GiB")
    if eta_s is not None:
        parts.append(f"ETA {duration(eta_s)}")
    return " | ".join(parts)


def _peak_rss_gib() -> float | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux (bytes on macOS)
    return kib / 2**20 if sys.platform.startswith("linux") else kib / 2**30


# ------------------------------------------------------------------------------------------ the tracker
class Tracker:
    """Rank 0's progress lines, tqdm bar, TensorBoard writer and W&B run for one call of ``train``.

    The trainer calls :meth:`step` once per optimizer step (after the step's held-out loss, if any, so
    the line can show it) with the step's metrics record and whether it went to metrics.jsonl; only those
    records (and held-out losses) go to TensorBoard and W&B, so they mirror metrics.jsonl exactly."""

    def __init__(self, cfg: RunConfig, run: RunDir, start_step: int, total_steps: int, runtime: dict):
        self.cfg = cfg
        self.tracking = cfg.tracking
        self.run = run
        self.start_step = start_step
        self.total_steps = total_steps
        self.tokens_per_step = cfg.train.tokens_per_step
        self.t0 = time.monotonic()
        self._interval: dict[str, float] = {}
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc=cfg.name, unit="step")
        self.tensorboard = _TensorBoard(run, start_step) if self.tracking.tensorboard else None
        self.wandb = _Wandb(cfg, run) if self.tracking.wandb else None
        if self.tracking.print_every:
            verb = f"resumes at step {start_step}" if start_step else "starts"
            procs = runtime.get("world_size", 1)
            extra = [p for p, on in (("TensorBoard", self.tensorboard), ("W&B", self.wandb)) if on]
            self._print(
                f"{time.strftime('%Y-%m-%d %H:%M:%S')} {cfg.name} {verb}: {total_steps} steps of "
                f"{human(self.tokens_per_step)} tokens on {runtime.get('device', '?')} ({procs} process"
                f"{'es' if procs != 1 else ''}), run directory {run.root}"
                + (f", tracking to {' and '.join(extra)}" if extra else "")
            )

    # -- per step
    def step(self, record: dict[str, Any], logged: bool, val_loss: float | None = None) -> None:
        step = record["step"]
        acc = self._interval
        acc["steps"] = acc.get("steps", 0) + 1
        tps = record.get("tokens_per_s")
        if tps:
            acc["seconds"] = acc.get("seconds", 0.0) + self.tokens_per_step / tps
            if record.get("mfu") is not None:
                acc["mfu_per_tps"] = record["mfu"] / tps
        if record.get("peak_mem_gib") is not None:
            acc["mem"] = max(acc.get("mem", 0.0), record["peak_mem_gib"])
        if logged:
            self._log(step, scalars(record))
        if val_loss is not None:
            self._log(step, {"val/loss": val_loss})
        if self.bar is not None:
            self.bar.update(1)
            postfix = {"loss": f"{record['loss']:.3f}"}
            if tps:
                postfix["tok_s"] = f"{tps:,.0f}"
            self.bar.set_postfix(postfix)
        every = self.tracking.print_every
        due = every and (
            step % every == 0
            or step == self.start_step + 1
            or step == self.total_steps
            or val_loss is not None
        )
        if due:
            self._print(self._line(record, val_loss))

    def _line(self, record: dict[str, Any], val_loss: float | None) -> str:
        acc, self._interval = self._interval, {}
        step = record["step"]
        tps = self.tokens_per_step * acc["steps"] / acc["seconds"] if acc.get("seconds") else None
        done = step - self.start_step
        elapsed = time.monotonic() - self.t0
        eta = elapsed / done * (self.total_steps - step) if done > 0 and step < self.total_steps else None
        mem, kind = acc.get("mem"), "mem"
        if mem is None:
            mem, kind = _peak_rss_gib(), "rss"
        mfu = acc["mfu_per_tps"] * tps if tps and "mfu_per_tps" in acc else None
        return format_line(
            self.cfg.name,
            step,
            self.total_steps,
            record["tokens"],
            record["loss"],
            val_loss=val_loss,
            lr=record.get("lr"),
            grad_norm=record.get("grad_norm"),
            tokens_per_s=tps,
            mfu=mfu,
            mem_gib=mem,
            mem_kind=kind,
            eta_s=eta,
        )

    def _print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
            sys.stdout.flush()
        else:
            print(line, flush=True)

    def _log(self, step: int, values: dict[str, float]) -> None:
        if not values:
            return
        if self.tensorboard is not None:
            self.tensorboard.log(step, values)
        if self.wandb is not None:
            self.wandb.log(step, values)

    def close(self, state: str) -> None:
        """End the bar and the integrations; ``state`` is the run's (done, interrupted, failed)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.wandb is not None:
            self.wandb.close(state)
            self.wandb = None


class NullTracker:
    """What ranks other than 0 get: nothing to report."""

    def step(self, record: dict[str, Any], logged: bool, val_loss: float | None = None) -> None:
        pass

    def close(self, state: str) -> None:
        pass


# --------------------------------------------------------------------------------------- integrations
class _TensorBoard:
    def __init__(self, run: RunDir, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a run resumed from the checkpoint of step N hides what a killed session logged after N.
        self.writer = SummaryWriter(
            log_dir=str(run.root / "tensorboard"),
            purge_step=start_step + 1 if start_step else None,
            flush_secs=30,
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


def wandb_names(cfg: RunConfig, record: dict[str, Any] | None) -> dict[str, str]:
    """W&B project, group and name of a run from its run record (sweep, arm verbatim, grid point, seed)."""
    record = record or {}
    sweep = (record.get("sweep") or {}).get("name")
    if not sweep:
        return {
            "project": cfg.tracking.wandb_project or DEFAULT_WANDB_PROJECT,
            "group": cfg.name,
            "name": cfg.name,
        }
    arm = record.get("arm") or ""
    grid = " ".join(f"{k.split('.')[-1]}={v}" for k, v in (record.get("grid_point") or {}).items())
    point = " ".join(p for p in (arm, grid) if p)
    seed = record.get("seed", cfg.train.seed)
    return {
        "project": cfg.tracking.wandb_project or sweep,
        "group": f"{sweep} {point}".strip(),
        "name": f"{point} seed={seed}".strip(),
    }


def wandb_run_id(record: dict[str, Any] | None, cfg: RunConfig) -> str:
    """The W&B run id of a run directory: its run id and creation time, the same in every session (a resumed
    run continues its W&B run) and different for a directory made anew with the same config."""
    from harness.training.config import config_hash

    record = record or {}
    run_id = record.get("run_id") or config_hash(cfg)
    created = record.get("created_at")
    return f"{run_id}-{int(created):x}" if isinstance(created, int | float) else run_id


class _Wandb:
    def __init__(self, cfg: RunConfig, run: RunDir):
        import wandb

        record = run.read_record()
        tracking = cfg.tracking
        names = wandb_names(cfg, record)
        facts = {k: (record or {}).get(k) for k in ("run_id", "sweep", "arm", "grid_point", "seed", "model")}
        config = {**to_dict(cfg), "run": {**facts, "run_dir": str(run.root.resolve())}}
        sweep = ((record or {}).get("sweep") or {}).get("name")
        self.run = wandb.init(
            project=names["project"],
            entity=tracking.wandb_entity,
            group=names["group"],
            name=names["name"],
            job_type="train",
            tags=[t for t in (sweep, (record or {}).get("arm")) if t][:2],
            id=wandb_run_id(record, cfg),
            resume="allow",
            dir=str(run.root),
            mode=tracking.wandb_mode,
            config=config,
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self, state: str) -> None:
        self.run.summary["state"] = state
        self.run.finish(exit_code=0 if state in ("done", "interrupted") else 1)

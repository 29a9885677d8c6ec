"""The training loop: ``train(cfg, run_dir)``.

One loop serves a CPU test, a single GPU and many GPUs under torchrun or SLURM. Its promises:

* **Exact resume.** Model, optimizer, scheduler, every RNG and the data position are checkpointed, so
  N steps + kill + resume + N steps logs the same losses as 2N uninterrupted steps. Metrics logged after
  the last checkpoint by a killed run are dropped on resume.
* **Nothing lost.** Checkpoints are atomic (see checkpoint.py); a run directory that holds a different
  config, or a finished run, is never overwritten. Everything that can be checked before writing is
  (:mod:`harness.training.preflight`). A checkpoint damaged after it was saved is skipped, named, and the
  run resumes from the newest one that verifies; one trained under another config is refused.
* **Telemetry.** ``metrics.jsonl`` gets step, tokens, loss (total, cross-entropy, MoE aux), lr, grad
  norm, tokens/s, MFU (from the accounting's FLOPs per token), peak memory and per-expert load;
  ``events.jsonl`` gets loss spikes (loss above ``spike_factor`` x its EMA), held-out losses,
  checkpoints, resumes and a clean stop on a non-finite loss. Rank 0 also prints a progress line every
  ``tracking.print_every`` steps and, when switched on, mirrors metrics.jsonl to TensorBoard and W&B
  (tracking.py).
* **Clean stops.** ``should_stop`` (SLURM's pre-timeout signal in a sweep job; SIGINT/SIGTERM under
  ``ablate train``) ends the run at a step boundary with a checkpoint and status "interrupted".
* **One writer.** Rank 0 holds the run directory's lock for the whole run, so a second trainer (or an
  evaluation, or a relaunch) on the same directory is refused at once, naming the holder.

The loop reads top to bottom: :func:`train` checks the directory and takes its lock, :func:`_start` builds
the tokenizer, model, optimizer and data (resuming from the latest checkpoint), :func:`_optimizer_step`
runs one step over the micro-batches, :func:`_record_step` logs it, and :func:`_save` checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.accounting import GPU_PEAK_FLOPS, plan_model
from harness.config_errors import ConfigError
from harness.data import build_tokenizer, load_tokenizer, make_batches
from harness.devices import resolve_device
from harness.diskspace import disk_error, room_warning
from harness.environment import software_stack, stack_changes
from harness.kernels.fused import kernels_run
from harness.locks import LockBusy
from harness.model import HybridLM
from harness.training import distributed as D
from harness.training.checkpoint import (
    TMP_DAMAGED,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    newest_good_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from harness.training.config import RunConfig, config_hash, config_identity
from harness.training.float8 import convert_to_float8
from harness.training.optim import build_optimizer, build_scheduler
from harness.training.preflight import check_before_writing
from harness.training.record import check_provenance, prepare_run_dir
from harness.training.rundir import DamagedFile, RunDir, warn_damage
from harness.training.spikes import SpikeDetector
from harness.training.tracking import NullTracker, Tracker, check_available

HELDOUT_SEED = 0  # the validation batches' order: fixed, so that every run of a sweep sees the same ones


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on (e.g. a non-finite loss); no traceback needed."""


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    gpu = torch.cuda.get_device_name(device).lower()
    return next((flops for key, flops in GPU_PEAK_FLOPS.items() if key in gpu), None)


def _full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts (works for plain, DDP and FSDP2 models)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _load_full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, weights: dict, optim_state: dict
) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(
        model,
        optimizer,
        model_state_dict=weights,
        optim_state_dict=optim_state,
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=False),
    )


@dataclass
class _Session:
    """What one call of :func:`train` works with, built by :func:`_start`."""

    cfg: RunConfig
    run: RunDir
    info: D.DistInfo
    device: torch.device
    model: HybridLM
    wrapped: nn.Module  # the model as DDP / FSDP2 wrapped it (the model itself on one process)
    forward: nn.Module  # what is called: ``wrapped``, compiled or not
    optimizer: torch.optim.Optimizer
    scheduler: Any
    tokenizer: Any
    batches: Any
    spikes: SpikeDetector
    autocast: Any
    micro_steps: int
    total_steps: int
    flops_per_token: float
    peak: float | None
    step: int = 0
    tokens: int = 0
    lr: float = 0.0  # the learning rate of the last step


def train(
    cfg: RunConfig, run_dir: str | Path, should_stop: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Train (or resume, or confirm finished) the run in ``run_dir``; returns a summary.

    ``should_stop`` is polled after every optimizer step (the launcher's preemption flag, set by SLURM's
    pre-timeout signal, or the flag that SIGINT/SIGTERM raise under ``ablate train``). When it turns true
    on any rank, every rank stops at the same step, a checkpoint of that step is written, and the run
    returns ``state: "interrupted"``; the next call resumes exactly.
    """
    check_available(cfg.tracking)
    info = D.init_distributed(resolve_device(cfg.train.device).type)
    device = resolve_device(cfg.train.device, info.local_rank)
    run = RunDir(run_dir)
    try:
        check_before_writing(cfg, info.world_size)
    except ConfigError:
        D.shutdown(info)
        raise
    with contextlib.ExitStack() as held:
        busy = None
        if info.is_main:
            try:
                held.enter_context(run.lock("train"))
            except LockBusy as e:
                busy = e
        if D.any_rank(busy is not None, info, device):
            D.shutdown(info)
            raise busy or LockBusy(f"{run.root} is in use (rank 0 could not take its lock)", {})
        prepare_run_dir(cfg, run, write=info.is_main)
        D.barrier(info)
        resume = resume_point(cfg, run, report=info.is_main)
        status = _status(run, report=info.is_main)
        finished = resume and (resume[0] >= cfg.train.total_steps or status.get("stopped_early"))
        if status.get("state") == "done" and finished:
            return {"state": "done", "skipped": True, **status}
        session, runtime = _start(cfg, run, info, device, resume)
        tracker = Tracker(cfg, run, session.step, session.total_steps, runtime) if info.is_main else None
        state = "failed"
        try:
            result = _loop(session, should_stop, tracker or NullTracker())
            state = result["state"]
            return result
        except Exception as e:
            full = disk_error(e, run.root)
            if info.is_main:
                _record_failure(session, full.status_error if full else _first_line(e))
            if full is not None and full is not e:
                raise full from e
            raise
        finally:
            if tracker is not None:
                tracker.close(state)


def resume_point(cfg: RunConfig, run: RunDir, report: bool = True) -> tuple[int, Path, tuple] | None:
    """``(step, checkpoint, (weights, state, meta))`` of the newest checkpoint that verifies (checksums
    recorded at save time) and was trained under ``cfg`` (else ConfigError with both run ids); None when
    there is none. Each newer, damaged checkpoint is named (``report``) and skipped."""
    skipped: list[tuple[Path, str]] = []
    found = newest_good_checkpoint(run.checkpoints, lambda path, why: skipped.append((path, why)))
    if report:
        target = f"resuming from {found[0].name}" if found else "starting from step 0"
        for path, why in skipped:
            warn_damage(f"{path} is damaged ({why}); skipped, {target}")
    if found is None:
        return None
    path, (weights, state, meta) = found
    check_provenance(cfg, run, path, meta)
    return int(meta["step"]), path, (weights, state, meta)


def _status(run: RunDir, report: bool) -> dict[str, Any]:
    """status.json; a damaged one is named (``report``) and read as empty (the trainer rewrites it)."""
    try:
        return run.status()
    except DamagedFile as e:
        if report:
            warn_damage(f"{e.path} is damaged ({e.problem}); the trainer rewrites it")
        return {}


def _set_aside_damaged(run: RunDir, step: int) -> None:
    """Checkpoints newer than the one resumed from did not verify: renamed out of the way (hidden, removed
    by the next save), so that no listing or pruning takes them for good ones."""
    for path in list_checkpoints(run.checkpoints):
        if checkpoint_step(path) > step:
            path.rename(path.with_name(f".{path.name}{TMP_DAMAGED}{time.time_ns()}"))
            run.event("checkpoint_damaged", checkpoint=path.name, resumed_from=step)


def _start(
    cfg: RunConfig, run: RunDir, info: D.DistInfo, device: torch.device, resume: tuple | None = None
) -> tuple[_Session, dict]:
    """Tokenizer, model, optimizer, schedule and data, resumed from ``resume`` (:func:`resume_point`); and
    the run-time facts (device, world size, compile, scan backend) the start or resume event records."""
    loop = cfg.train
    model_cfg = cfg.model
    micro_steps = loop.global_batch // (loop.micro_batch * info.world_size)
    if micro_steps < 1 or micro_steps * loop.micro_batch * info.world_size != loop.global_batch:
        raise ConfigError(
            f"global_batch={loop.global_batch} must be a multiple of micro_batch x world_size = "
            f"{loop.micro_batch} x {info.world_size}",
            key="train.global_batch",
        )
    use_bf16 = loop.precision == "bf16" or (loop.precision == "auto" and device.type == "cuda")

    tokenizer = _run_tokenizer(cfg, run, info)

    torch.manual_seed(loop.seed)
    model = HybridLM(model_cfg).to(device)
    float8 = convert_to_float8(model, device) if loop.float8 else []  # before wrapping, compile, optimizer
    wrapped = D.wrap_model(model, loop.distributed, info, device)
    # After wrapping: FSDP2 replaces parameters with sharded DTensors, which the optimizer must hold.
    optimizer = build_optimizer(model, cfg.optim, device)
    scheduler = build_scheduler(optimizer, loop.total_steps, cfg.schedule)

    step, tokens, data_state = 0, 0, None
    spikes = SpikeDetector(loop.spike_factor, loop.spike_ema, loop.spike_warmup)
    runtime = _runtime_facts(cfg, info, device)
    if float8:
        runtime["float8_linears"] = len(float8)
    stack = _record_stack(run, info, resume, runtime)
    D.barrier(info)  # every rank has read its checkpoint before rank 0 moves damaged ones aside
    if info.is_main:
        _set_aside_damaged(run, resume[0] if resume else 0)
    if resume is not None:
        _, ckpt, (weights, state, meta) = resume
        _load_full_state(wrapped, optimizer, weights, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, tokens, data_state = meta["step"], meta["tokens"], state["data"]
        spikes.ema = state.get("spike_ema")
        if info.is_main:
            run.truncate_metrics_after(step)
            run.event("resume", step=step, checkpoint=ckpt.name, environment=stack, **runtime)
    elif info.is_main:
        run.truncate_metrics_after(0)  # a run killed before its first checkpoint starts over
        run.event("start", step=0, params=model.num_parameters(), environment=stack, **runtime)
    if info.is_main:
        run.set_status(state="running", step=step, total_steps=loop.total_steps, world_size=info.world_size)

    batches = make_batches(
        cfg.data,
        tokenizer,
        split="train",
        seq_len=loop.seq_len,
        batch_size=loop.micro_batch,
        rank=info.rank,
        world_size=info.world_size,
        seed=loop.seed,
        num_workers=loop.num_workers,
        state=data_state,  # the loader checks that data, tokenizer, seq_len and seed are unchanged
        num_samples=loop.total_steps * loop.global_batch,
    )
    session = _Session(
        cfg=cfg,
        run=run,
        info=info,
        device=device,
        model=model,
        wrapped=wrapped,
        forward=torch.compile(wrapped) if loop.compile else wrapped,
        optimizer=optimizer,
        scheduler=scheduler,
        tokenizer=tokenizer,
        batches=batches,
        spikes=spikes,
        autocast=torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext(),
        micro_steps=micro_steps,
        total_steps=loop.total_steps,
        flops_per_token=plan_model(model_cfg, context=loop.seq_len).flops_per_token,
        peak=peak_flops(device),
        step=step,
        tokens=tokens,
    )
    return session, runtime


def _run_tokenizer(cfg: RunConfig, run: RunDir, info: D.DistInfo):
    """The tokenizer is part of the run: built once by rank 0, then always loaded from the run directory;
    ConfigError when it has more tokens than the model has embeddings."""
    if info.is_main and not (run.tokenizer / "tokenizer.json").exists():
        build_tokenizer(cfg.data.tokenizer, cfg.data).save(run.tokenizer)
    D.barrier(info)
    tokenizer = load_tokenizer(run.tokenizer)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is "
            f"{cfg.model.vocab_size}; raise model.vocab_size or shrink data.tokenizer.vocab_size",
            key="model.vocab_size",
        )
    return tokenizer


def _record_stack(run: RunDir, info: D.DistInfo, resume: tuple | None, runtime: dict[str, Any]) -> dict:
    """This session's software stack, put into run.json (rank 0); a resume under another stack than the
    last session's says so, and its event lists what moved."""
    stack = software_stack()
    if info.is_main:
        changes = stack_changes(run.record_environment(stack), stack)
        if changes and resume is not None:
            print(f"{run.root}: resuming under another software stack: {'; '.join(changes)}", flush=True)
            runtime["stack_changes"] = changes
    return stack


def _runtime_facts(cfg: RunConfig, info: D.DistInfo, device: torch.device) -> dict[str, Any]:
    """How this session runs (device, world size, compile, scan, kernels and MoE backends), for its start
    or resume event; ConfigError when ``model.kernels: fused`` cannot run here."""
    model_cfg, loop = cfg.model, cfg.train
    runtime = {"device": str(device), "world_size": info.world_size, "compile": loop.compile}
    runtime["scan_backend"] = model_cfg.mamba.scan_backend
    try:  # the setting, and what it runs here (fused Triton kernels or eager PyTorch)
        runtime["kernels"] = f"{model_cfg.kernels} ({kernels_run(model_cfg.kernels, device, loop.compile)})"
    except RuntimeError as e:
        raise ConfigError(str(e), key="model.kernels") from None
    if model_cfg.moe is not None:
        runtime["moe_backend"] = model_cfg.moe.backend
    return runtime


def _loop(
    s: _Session, should_stop: Callable[[], bool] | None, tracker: Tracker | NullTracker
) -> dict[str, Any]:
    loop, run, info = s.cfg.train, s.run, s.info
    s.wrapped.train()
    while s.step < s.total_steps:
        t0 = time.perf_counter()
        loss, ce, aux, grad_norm, counts = _optimizer_step(s)
        if s.device.type == "cuda":
            torch.cuda.synchronize(s.device)
        tokens_per_s = loop.tokens_per_step / (time.perf_counter() - t0)
        spike = s.spikes.update(s.step, loss)
        if spike and info.is_main:
            run.event("loss_spike", **spike)
        record = _step_record(s, loss, ce, aux, grad_norm, tokens_per_s)
        logged = info.is_main and (s.step % loop.log_every == 0 or s.step == s.total_steps)
        if logged:
            record = _record_step(s, record, counts)

        val = stop = None
        if s.step == s.total_steps or (loop.eval_every and s.step % loop.eval_every == 0):
            val, accuracy = heldout_loss(s.forward, s.cfg, s.tokenizer, info, s.device, s.autocast)
            if info.is_main:
                run.event("heldout_loss", step=s.step, val_loss=val, val_accuracy=accuracy)
                run.append(
                    run.metrics,
                    {"step": s.step, "tokens": s.tokens, "val_loss": val, "val_accuracy": accuracy},
                )
            measured = {"val_loss": val, "val_accuracy": accuracy}
            if loop.stop_when is not None and loop.stop_when.met(measured[loop.stop_when.metric]):
                stop = {"metric": loop.stop_when.metric, "value": measured[loop.stop_when.metric]}
        tracker.step(record, logged, val)
        if stop is not None and s.step < s.total_steps:
            return _stop_early(s, stop)
        if s.step == s.total_steps or (loop.checkpoint_every and s.step % loop.checkpoint_every == 0):
            _save(s)
        elif should_stop is not None and D.any_rank(should_stop(), info, s.device):
            _save(s)
            if info.is_main:
                run.event("interrupted", step=s.step, tokens=s.tokens)
                run.set_status(state="interrupted", step=s.step, tokens=s.tokens, total_steps=s.total_steps)
            D.shutdown(info)
            return {"state": "interrupted", "step": s.step, "tokens": s.tokens, "run_dir": str(run.root)}

    if info.is_main:
        run.event("finish", step=s.step, tokens=s.tokens)
        run.set_status(state="done", step=s.step, tokens=s.tokens, total_steps=s.total_steps)
    D.barrier(info)
    D.shutdown(info)
    return {"state": "done", "step": s.step, "tokens": s.tokens, "run_dir": str(run.root)}


def _stop_early(s: _Session, stop: dict[str, Any]) -> dict[str, Any]:
    """``train.stop_when`` was met at this step's held-out evaluation: checkpoint and end the run done."""
    _save(s)
    run, info, condition = s.run, s.info, s.cfg.train.stop_when
    if info.is_main:
        run.event("stopped_early", step=s.step, tokens=s.tokens, condition=condition.describe(), **stop)
        run.event("finish", step=s.step, tokens=s.tokens)
        run.set_status(
            state="done", step=s.step, tokens=s.tokens, total_steps=s.total_steps, stopped_early=stop
        )
    D.barrier(info)
    D.shutdown(info)
    return {
        "state": "done",
        "step": s.step,
        "tokens": s.tokens,
        "run_dir": str(run.root),
        "stopped_early": stop,
    }


def _optimizer_step(s: _Session) -> tuple[float, float, float, float, torch.Tensor | None]:
    """One optimizer step over ``micro_steps`` micro-batches; returns loss, CE, aux loss, grad norm and the
    tokens routed to each expert (MoE only). A non-finite loss stops the run before the weights change."""
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)
    sums = torch.zeros(3, device=s.device)  # loss, ce, aux
    counts = None
    for micro in range(s.micro_steps):
        batch = next(s.batches)
        ids, targets = batch["input_ids"].to(s.device), batch["targets"].to(s.device)
        sync = micro == s.micro_steps - 1 or not hasattr(s.wrapped, "no_sync")
        ctx = contextlib.nullcontext() if sync else s.wrapped.no_sync()
        with ctx, s.autocast:
            out = s.forward(ids, targets=targets)
            (out.loss / s.micro_steps).backward()
        sums += torch.stack([out.loss.detach(), out.ce_loss.detach(), out.aux_loss.detach().float()])
        if out.expert_counts is not None:
            counts = out.expert_counts if counts is None else counts + out.expert_counts
    clip = s.cfg.optim.grad_clip
    grad_norm = torch.nn.utils.clip_grad_norm_(s.wrapped.parameters(), clip if clip > 0 else float("inf"))
    loss, ce, aux = (D.all_reduce_mean(sums / s.micro_steps, s.info)).tolist()
    grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        if s.info.is_main:
            s.run.event("nonfinite", step=s.step + 1, loss=loss, grad_norm=grad_norm)
            s.run.set_status(
                state="failed", step=s.step, error=f"non-finite loss {loss} at step {s.step + 1}"
            )
        raise TrainingError(
            f"loss became {loss} (grad norm {grad_norm}) at step {s.step + 1}; stopped without updating "
            f"the weights. The last good checkpoint is in {s.run.checkpoints}. Lower the learning rate or "
            "enable mamba.inner_rmsnorm."
        )
    s.lr = s.scheduler.get_last_lr()[0]
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    s.step += 1
    s.tokens += s.cfg.train.tokens_per_step
    return loss, ce, aux, grad_norm, counts


def _step_record(
    s: _Session, loss: float, ce: float, aux: float, grad_norm: float, tokens_per_s: float
) -> dict[str, Any]:
    """The step's metrics (what metrics.jsonl records, per-expert load aside)."""
    return {
        "step": s.step,
        "tokens": s.tokens,
        "time": time.time(),
        "loss": loss,
        "ce_loss": ce,
        "aux_loss": aux,
        "lr": s.lr,
        "grad_norm": grad_norm,
        "tokens_per_s": tokens_per_s,
        "mfu": s.flops_per_token * tokens_per_s * s.info.world_size / s.peak if s.peak else None,
        "peak_mem_gib": torch.cuda.max_memory_allocated(s.device) / 2**30
        if s.device.type == "cuda"
        else None,
    }


def _record_step(s: _Session, record: dict[str, Any], counts) -> dict[str, Any]:
    """One line of metrics.jsonl (the step's record plus per-expert load) and the status (rank 0); returns
    the line."""
    record = dict(record)
    if counts is not None:
        load = counts.float() / counts.sum(-1, keepdim=True)
        record["expert_load"] = [[round(x, 4) for x in row] for row in load.tolist()]
        record["expert_load_max_over_mean"] = float((load.max(-1).values * load.shape[-1]).max())
    s.run.append(s.run.metrics, record)
    s.run.set_status(
        state="running", step=s.step, tokens=s.tokens, loss=record["loss"], total_steps=s.total_steps
    )
    return record


def _record_failure(s: _Session, error: str) -> None:
    """status.json says ``failed`` and why, never ``running``, when training ends in an exception; on a
    full disk this small write may fail too, and then the launcher's job state says it instead."""
    try:
        s.run.event("failed", step=s.step, error=error)
        s.run.set_status(state="failed", step=s.step, tokens=s.tokens, total_steps=s.total_steps, error=error)
    except OSError:
        pass


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _save(s: _Session) -> None:
    """A checkpoint of the current step: weights, optimizer, schedule, RNGs, data position (rank 0 writes)."""
    weights, optim_state = _full_state(s.wrapped, s.optimizer)
    if s.info.is_main:
        last = latest_checkpoint(s.run.checkpoints)
        if last is not None and (warning := room_warning(s.run.checkpoints, _tree_bytes(last))):
            print(f"{s.cfg.name}: WARNING: {warning}", file=sys.stderr, flush=True)
            s.run.event("low_disk", step=s.step, warning=warning)
        state = {
            "optimizer": optim_state,
            "scheduler": s.scheduler.state_dict(),
            "rng": rng_state(),
            "data": s.batches.state_dict(),
            "spike_ema": s.spikes.ema,
        }
        meta = {"tokens": s.tokens, "config_hash": config_hash(s.cfg), "config": config_identity(s.cfg)}
        path = save_checkpoint(
            s.run.checkpoints, s.step, weights, state, meta, keep_last=s.cfg.train.keep_last
        )
        s.run.event("checkpoint", step=s.step, path=path.name)
    D.barrier(s.info)


@torch.no_grad()
def heldout_loss(
    model: nn.Module, cfg: RunConfig, tokenizer, info: D.DistInfo, device, autocast
) -> tuple[float, float]:
    """Mean held-out cross-entropy over the first ``eval_batches`` validation batches, and the argmax
    accuracy over all their scored targets (MQAR: the answers, as zoology's ``valid/accuracy``; text: the
    next tokens): the same batches at every evaluation and for every seed of a sweep (their order is drawn
    from HELDOUT_SEED, not the run's seed), so that the seed spread of held-out losses is the models' and
    not the batches'."""
    model.eval()
    batches = make_batches(
        cfg.data,
        tokenizer,
        split="validation",
        seq_len=cfg.train.seq_len,
        batch_size=cfg.train.micro_batch,
        rank=info.rank,
        world_size=info.world_size,
        seed=HELDOUT_SEED,
        start_sample=0,
    )
    total = torch.zeros((), device=device)
    hits = torch.zeros(2, device=device)  # correct, scored
    for _ in range(cfg.train.eval_batches):
        batch = next(batches)
        targets = batch["targets"].to(device)
        with autocast:
            out = model(batch["input_ids"].to(device), targets=targets)
        total += out.ce_loss.float()
        scored = targets != -100
        hits += torch.stack([(out.logits.argmax(-1) == targets)[scored].sum(), scored.sum()]).float()
    model.train()
    loss = float(D.all_reduce_mean(total / cfg.train.eval_batches, info))
    hits = D.all_reduce_mean(hits, info)
    if device.type == "cuda":
        # The evaluation's full (batch x tokens x vocab) logits are its memory peak, which the caching
        # allocator would keep: hand it back, for the runs that share this GPU (16 small recall runs at
        # once ran an 80 GB H100 out of memory, each process holding 4-8 GB).
        del out
        torch.cuda.empty_cache()
    return loss, float(hits[0] / hits[1].clamp(min=1))

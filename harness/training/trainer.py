"""The training loop: ``train(cfg, run_dir)``.

One loop serves a CPU test, a single GPU and many GPUs under torchrun or SLURM. Its promises:

* **Exact resume.** Model, optimizer, scheduler, every RNG and the data position are checkpointed, so
  N steps + kill + resume + N steps logs the same losses as 2N uninterrupted steps. Metrics logged after
  the last checkpoint by a killed run are dropped on resume.
* **Nothing lost.** Checkpoints are atomic (see checkpoint.py); a run directory that holds a different
  config, or a finished run, is never overwritten.
* **Telemetry.** ``metrics.jsonl`` gets step, tokens, loss (total, cross-entropy, MoE aux), lr, grad
  norm, tokens/s, MFU (from the accounting's FLOPs per token), peak memory and per-expert load;
  ``events.jsonl`` gets loss spikes (loss above ``spike_factor`` x its EMA), evaluations, checkpoints,
  resumes and a clean stop on a non-finite loss.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.accounting import GPU_PEAK_FLOPS, plan_model
from harness.config_loader import ConfigError, to_dict
from harness.data import build_tokenizer, load_tokenizer, make_batches
from harness.model import HybridLM
from harness.training import distributed as D
from harness.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from harness.training.config import RunConfig, config_hash
from harness.training.optim import build_optimizer, build_scheduler
from harness.training.rundir import RunDir
from harness.training.spikes import SpikeDetector


class TrainingError(RuntimeError):
    """Training stopped for a reason the user must act on (e.g. a non-finite loss); no traceback needed."""


def resolve_device(name: str, info: D.DistInfo) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


def _unwrap(model: nn.Module) -> HybridLM:
    return model.module if hasattr(model, "module") else model


def prepare_run_dir(cfg: RunConfig, run: RunDir, info: D.DistInfo | None = None) -> None:
    """Create the run directory, or check that an existing one holds this very config.

    The sweep launcher calls this too, before submitting, so a queued run already has its directory."""
    info = info or D.DistInfo()
    resolved = to_dict(cfg)
    digest = config_hash(cfg)
    if run.config.exists():
        stored = run.read_config()
        if stored != resolved:
            raise ConfigError(
                f"{run.root} already holds a run with a different config (its hash "
                f"{run.status().get('config_hash', '?')}, this one {digest}); finished or interrupted runs "
                "are never overwritten: choose another run directory",
                source=str(run.config),
            )
    elif info.is_main:
        run.create()
        run.write_config(resolved)
        run.set_status(state="pending", config_hash=digest, name=cfg.name)


def train(
    cfg: RunConfig, run_dir: str | Path, should_stop: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Train (or resume, or confirm finished) the run in ``run_dir``; returns a summary.

    ``should_stop`` is polled after every optimizer step (the launcher's preemption flag, set by SLURM's
    pre-timeout signal). When it turns true on any rank, every rank stops at the same step, a checkpoint
    of that step is written, and the run returns ``state: "interrupted"``; the next call resumes exactly.
    """
    model_cfg = cfg.model_config()
    loop = cfg.train
    device = resolve_device(loop.device, D.DistInfo())
    info = D.init_distributed(device.type)
    device = resolve_device(loop.device, info)
    run = RunDir(run_dir)
    prepare_run_dir(cfg, run, info)
    D.barrier(info)
    if run.status().get("state") == "done":
        return {"state": "done", "skipped": True, **run.status()}

    micro_steps = loop.global_batch // (loop.micro_batch * info.world_size)
    if micro_steps < 1 or micro_steps * loop.micro_batch * info.world_size != loop.global_batch:
        raise ConfigError(
            f"global_batch={loop.global_batch} must be a multiple of micro_batch x world_size = "
            f"{loop.micro_batch} x {info.world_size}",
            key="train.global_batch",
        )
    total_steps = loop.total_steps
    use_bf16 = loop.precision == "bf16" or (loop.precision == "auto" and device.type == "cuda")

    # The tokenizer is part of the run: built once by rank 0, then always loaded from the run directory.
    if info.is_main and not (run.tokenizer / "tokenizer.json").exists():
        build_tokenizer(cfg.data.tokenizer, cfg.data).save(run.tokenizer)
    D.barrier(info)
    tokenizer = load_tokenizer(run.tokenizer)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is "
            f"{model_cfg.vocab_size}; raise model.vocab_size or shrink data.tokenizer.vocab_size",
            key="model.vocab_size",
        )

    torch.manual_seed(loop.seed)
    model = HybridLM(model_cfg).to(device)
    wrapped = D.wrap_model(model, loop.distributed, info, device)
    # After wrapping: FSDP2 replaces parameters with sharded DTensors, which the optimizer must hold.
    optimizer = build_optimizer(model, cfg.optim, device)
    scheduler = build_scheduler(optimizer, total_steps, cfg.schedule)
    forward = torch.compile(wrapped) if loop.compile else wrapped

    step, tokens, data_state = 0, 0, None
    spikes = SpikeDetector(loop.spike_factor, loop.spike_ema, loop.spike_warmup)
    ckpt = latest_checkpoint(run.checkpoints)
    if ckpt is not None:
        weights, state, meta = load_checkpoint(ckpt)
        _load_full_state(wrapped, optimizer, weights, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, tokens, data_state = meta["step"], meta["tokens"], state["data"]
        spikes.ema = state.get("spike_ema")
        if info.is_main:
            run.truncate_metrics_after(step)
            run.event("resume", step=step, checkpoint=ckpt.name)
    elif info.is_main:
        run.event(
            "start", step=0, world_size=info.world_size, device=str(device), params=model.num_parameters()
        )
    if info.is_main:
        run.set_status(state="running", step=step, total_steps=total_steps, world_size=info.world_size)

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
        num_samples=total_steps * loop.global_batch,
    )
    flops_per_token = plan_model(model_cfg, context=loop.seq_len).flops_per_token
    peak = peak_flops(device)
    progress = None
    if info.is_main and sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(total=total_steps, initial=step, desc=cfg.name, unit="step")

    def save(at_step: int) -> None:
        weights, optim_state = _full_state(wrapped, optimizer)
        if info.is_main:
            state = {
                "optimizer": optim_state,
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "data": batches.state_dict(),
                "spike_ema": spikes.ema,
            }
            meta = {"tokens": tokens, "config_hash": config_hash(cfg)}
            path = save_checkpoint(run.checkpoints, at_step, weights, state, meta, keep_last=loop.keep_last)
            run.event("checkpoint", step=at_step, path=path.name)
        D.barrier(info)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
    wrapped.train()
    while step < total_steps:
        t0 = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sums = torch.zeros(3, device=device)  # loss, ce, aux
        counts = None
        for micro in range(micro_steps):
            batch = next(batches)
            ids, targets = batch["input_ids"].to(device), batch["targets"].to(device)
            sync = micro == micro_steps - 1 or not hasattr(wrapped, "no_sync")
            ctx = contextlib.nullcontext() if sync else wrapped.no_sync()
            with ctx, autocast:
                out = forward(ids, targets=targets)
                (out.loss / micro_steps).backward()
            sums += torch.stack([out.loss.detach(), out.ce_loss.detach(), out.aux_loss.detach().float()])
            if out.expert_counts is not None:
                counts = out.expert_counts if counts is None else counts + out.expert_counts
        grad_norm = torch.nn.utils.clip_grad_norm_(
            wrapped.parameters(), cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        )
        loss, ce, aux = (D.all_reduce_mean(sums / micro_steps, info)).tolist()
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            if info.is_main:
                run.event("nonfinite", step=step + 1, loss=loss, grad_norm=grad_norm)
                run.set_status(state="failed", step=step, error=f"non-finite loss {loss} at step {step + 1}")
            raise TrainingError(
                f"loss became {loss} (grad norm {grad_norm}) at step {step + 1}; stopped without updating "
                f"the weights. The last good checkpoint is in {run.checkpoints}. Lower the learning rate or "
                "enable mamba.inner_rmsnorm."
            )
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += loop.tokens_per_step
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t0
        tokens_per_s = loop.tokens_per_step / elapsed
        spike = spikes.update(step, loss)
        if spike and info.is_main:
            run.event("loss_spike", **spike)

        if info.is_main and (step % loop.log_every == 0 or step == total_steps):
            record = {
                "step": step,
                "tokens": tokens,
                "time": time.time(),
                "loss": loss,
                "ce_loss": ce,
                "aux_loss": aux,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": tokens_per_s,
                "mfu": flops_per_token * tokens_per_s * info.world_size / peak if peak else None,
                "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30
                if device.type == "cuda"
                else None,
            }
            if counts is not None:
                load = counts.float() / counts.sum(-1, keepdim=True)
                record["expert_load"] = [[round(x, 4) for x in row] for row in load.tolist()]
                record["expert_load_max_over_mean"] = float((load.max(-1).values * load.shape[-1]).max())
            run.append(run.metrics, record)
            run.set_status(state="running", step=step, tokens=tokens, loss=loss, total_steps=total_steps)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")

        if step == total_steps or (loop.eval_every and step % loop.eval_every == 0):
            val = evaluate(forward, cfg, tokenizer, info, device, autocast)
            if info.is_main:
                run.event("eval", step=step, val_loss=val)
                run.append(run.metrics, {"step": step, "tokens": tokens, "val_loss": val})
        if step == total_steps or (loop.checkpoint_every and step % loop.checkpoint_every == 0):
            save(step)
        elif should_stop is not None and D.any_rank(should_stop(), info, device):
            save(step)
            if info.is_main:
                run.event("interrupted", step=step, tokens=tokens)
                run.set_status(state="interrupted", step=step, tokens=tokens, total_steps=total_steps)
            D.shutdown(info)
            return {"state": "interrupted", "step": step, "tokens": tokens, "run_dir": str(run.root)}

    if progress is not None:
        progress.close()
    if info.is_main:
        run.event("finish", step=step, tokens=tokens)
        run.set_status(state="done", step=step, tokens=tokens, total_steps=total_steps)
    D.barrier(info)
    D.shutdown(info)
    return {"state": "done", "step": step, "tokens": tokens, "run_dir": str(run.root)}


@torch.no_grad()
def evaluate(model: nn.Module, cfg: RunConfig, tokenizer, info: D.DistInfo, device, autocast) -> float:
    """Mean held-out cross-entropy over the first ``eval_batches`` validation batches (same every time)."""
    model.eval()
    batches = make_batches(
        cfg.data,
        tokenizer,
        split="validation",
        seq_len=cfg.train.seq_len,
        batch_size=cfg.train.micro_batch,
        rank=info.rank,
        world_size=info.world_size,
        seed=cfg.train.seed,
        start_sample=0,
    )
    total = torch.zeros((), device=device)
    for _ in range(cfg.train.eval_batches):
        batch = next(batches)
        with autocast:
            out = model(batch["input_ids"].to(device), targets=batch["targets"].to(device))
        total += out.ce_loss.float()
    model.train()
    return float(D.all_reduce_mean(total / cfg.train.eval_batches, info))

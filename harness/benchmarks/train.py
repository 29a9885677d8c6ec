"""Training throughput: our model against transformers' ``JambaForCausalLM`` at the same config, same run.

Both models get the same weights (ours exported with :func:`harness.hf_interop.to_hf_model`), the same
batches, bf16 weights on CUDA (fp32 on CPU), fused AdamW, and the same loss (cross-entropy of the logits,
computed identically outside the model). bf16 weights rather than autocast because transformers' Jamba
CUDA path fails under autocast (its fp32 inner norms hand the scan kernel B and C in another dtype than
u) and bf16 weights are how it is normally trained; our trainer itself uses autocast over fp32 weights.
Each model is warmed up, then timed over ``steps`` optimizer steps with the GPU synchronised; the table
reports tokens/s, MFU (FLOPs per token from :mod:`harness.accounting`, so the same for both) and peak
memory, and the ratio between the two.

    ablate bench train --preset mini-1to7 --batch 16 --seq-len 1024 --steps 10

Layouts that transformers cannot run (pure Mamba, RoPE, no inner Mamba norm: see hf_interop) are timed
for our model only, with the reason printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from harness.accounting import plan_model
from harness.config_loader import ConfigError
from harness.model import HybridLM
from harness.presets import get_preset
from harness.training.trainer import peak_flops


def _time_steps(
    step: Callable[[torch.Tensor], float], batches: list[torch.Tensor], warmup: int, device: torch.device
) -> tuple[float, float, float]:
    """Seconds per step (mean over the timed steps), last loss, peak GiB."""
    for ids in batches[:warmup]:
        step(ids)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    loss = float("nan")
    for ids in batches[warmup:]:
        loss = step(ids)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = (time.perf_counter() - start) / max(1, len(batches) - warmup)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return elapsed, loss, peak


def _make_step(forward: Callable[[torch.Tensor], torch.Tensor], params, device: torch.device):
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")

    def step(ids: torch.Tensor) -> float:
        logits = forward(ids[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def run_train_benchmark(
    preset: str, batch: int = 16, seq_len: int = 1024, steps: int = 10, warmup: int = 3, seed: int = 0
) -> dict[str, dict[str, float]]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = get_preset(preset)
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ours = HybridLM(cfg).to(device)
    g = torch.Generator().manual_seed(seed)
    batches = [
        torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), generator=g).to(device)
        for _ in range(warmup + steps)
    ]
    flops_per_token = plan_model(cfg, context=seq_len).flops_per_token
    peak = peak_flops(device)
    tokens = batch * seq_len
    results: dict[str, dict[str, float]] = {}

    contenders: list[tuple[str, Callable[[], tuple[Callable, object]]]] = [
        ("ours (HybridLM)", lambda: (lambda ids: ours(ids).logits, ours.parameters())),
    ]
    hf_reason = None
    try:
        from harness.hf_interop import to_hf_model

        # On CUDA, let transformers take its mamba-ssm / causal-conv1d kernel path, as ours does.
        hf = to_hf_model(ours, use_mamba_kernels=device.type == "cuda").to(device, dtype)
        hf.config.use_cache = False
        contenders.append(
            (
                "transformers JambaForCausalLM",
                lambda: (lambda ids: hf(ids, use_cache=False).logits, hf.parameters()),
            )
        )
    except (ConfigError, ImportError) as e:
        hf_reason = str(e)

    ours.to(dtype)  # after the export, so both start from the same fp32 weights
    for name, make in contenders:
        forward, params = make()
        seconds, loss, mem = _time_steps(_make_step(forward, params, device), batches, warmup, device)
        results[name] = {
            "tokens_per_s": tokens / seconds,
            "step_ms": seconds * 1e3,
            "mfu": flops_per_token * tokens / seconds / peak if peak else float("nan"),
            "peak_gib": mem,
            "loss": loss,
        }
        if device.type == "cuda":
            torch.cuda.empty_cache()

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    shape = f"batch {batch} x seq {seq_len}, {steps} steps after {warmup} warm-up"
    print(f"{preset}: {cfg.pattern} | {shape} | {gpu}")
    print(f"{'model':<32} {'tokens/s':>12} {'step ms':>9} {'MFU':>7} {'peak GiB':>9} {'loss':>8}")
    for name, r in results.items():
        row = f"{r['tokens_per_s']:>12,.0f} {r['step_ms']:>9.1f} {r['mfu']:>7.1%} {r['peak_gib']:>9.1f}"
        print(f"{name:<32} {row} {r['loss']:>8.3f}")
    if len(results) == 2:
        a, b = (r["tokens_per_s"] for r in results.values())
        print(f"throughput ratio ours / transformers: {a / b:.2f}x")
    if hf_reason:
        print(f"transformers not timed: {hf_reason}")
    return results
